"""Launching real torch.distributed processes for the tests, on 127.0.0.1 only.

Every process group here is gloo over the loopback interface: ``MASTER_ADDR=127.0.0.1``,
``GLOO_SOCKET_IFNAME=lo`` and a free port chosen on 127.0.0.1, so no other address is contacted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rollout.base import Response, SamplingParams

LOOPBACK = {"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_env(tmp: Path) -> dict[str, str]:
    """A subprocess environment for torchrun on loopback: one thread, its own model cache."""
    return {
        **os.environ,
        **LOOPBACK,
        "DAPO_RL_CACHE": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _rank_main(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    if world_size > 1:
        os.environ.update(LOOPBACK)
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_PORT=str(port)
        )
    os.environ["OMP_NUM_THREADS"] = "1"
    fn(*args)


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 240.0) -> None:
    """Run ``fn(*args)`` in ``world_size`` fresh processes (spawned) that form a gloo group on
    loopback (with one process: no group, torchrun's variables unset). Raises if one fails."""
    ctx = mp.start_processes(
        _rank_main,
        args=(world_size, free_port(), fn, args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.time() + timeout
    while not ctx.join(timeout=1.0):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"{world_size} training process(es) still running after {timeout} s")


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (torchrun starts its workers in new sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(p, signal.SIGKILL)


# ---- a deterministic rollout engine and reward, for runs that must see the same rollouts ------


class ScriptedEngine:
    """Responses that depend only on the prompt's tokens (and the sample index), never on the rank,
    the seed or the model: so one process and several ranks see exactly the same rollouts.

    About half of the prompts get G identical responses (a constant group: filtered out); responses
    end with EOS or are cut at ``max_new_tokens`` (truncated).
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch_sequences: int = 256) -> None:
        self.tokenizer = tokenizer
        self.vocab = len(tokenizer)

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Response]]:
        return [[self._response(p, i, n, params) for i in range(n)] for p in prompt_ids]

    def sync_weights(self) -> None:
        """Nothing to sync: the responses never depend on the model."""

    def _response(self, prompt: list[int], index: int, n: int, params: SamplingParams) -> Response:
        key = hashlib.sha256(repr(prompt).encode()).digest()
        constant = key[0] % 2 == 0
        rng = random.Random(key + (b"" if constant else bytes([index])))
        eos = params.eos_token_ids[0]
        length = rng.randint(1, params.max_new_tokens)
        tokens = [rng.randrange(4, self.vocab) for _ in range(length)]
        finished = length < params.max_new_tokens or rng.random() < 0.3
        if finished:
            tokens[-1] = eos
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Response(tokens, text, "eos" if finished else "length")


def parity_reward(response: str, ground_truth: str, **extra: Any) -> RewardResult:
    """+1 for a response of even length, -1 otherwise (the scripted responses are noise)."""
    right = len(response) % 2 == 0
    return RewardResult(1.0 if right else -1.0, right, "even" if right else "odd")


def register_scripted_engine() -> None:
    from dapo_rl.rollout import ROLLOUT_ENGINES

    if "scripted" not in ROLLOUT_ENGINES:
        ROLLOUT_ENGINES.register("scripted", ScriptedEngine)


def problem_rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"{i}+{3 * i}=", "answer": str(4 * i), "uid": f"p{i}"} for i in range(n)]
