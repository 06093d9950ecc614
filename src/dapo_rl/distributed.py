"""Data parallelism over torch.distributed: the process context, FSDP2 wrapping and reductions.

One code path from a laptop to a cluster. Without torchrun's environment, :func:`init_distributed`
returns a single-process :class:`DistContext` whose reductions are the identity and nothing of
torch.distributed is started. Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``) it starts
the process group (gloo on CPU, NCCL on CUDA); a group that is already running (Ray Train starts
its own) is adopted as it is.

How a DAPO step is split across ranks (docs/distributed.md):

1. Prompts: every rank draws the same global batch from its own copy of the prompt stream and
   rolls out a contiguous share of it (:meth:`DistContext.shard`); a group never spans ranks, and
   sampling seeds include the rank (:attr:`DistContext.seed_parts`).
2. Dynamic sampling counts informative groups globally (:meth:`DistContext.all_counts`, used by
   :class:`dapo_rl.sampling.GroupCollector`): groups are ordered by (round, rank, position), the
   first ``prompts_per_step`` are trained, the rest is surplus, exactly as in one process.
3. The loss: aggregation denominators are all-reduced (:meth:`DistContext.all_reduce_sum` passed to
   ``aggregation_totals``) and gradients are SUMMED across ranks (FSDP2 with a divide factor of 1,
   or an all-reduce SUM of replicated gradients), so loss and gradient equal one process's.
4. FSDP2 needs every rank to run the same collectives: mini-batches are cut by global group
   position and micro-batch plans are padded with zero-weight micro-batches (:func:`pad_plan`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from dapo_rl.batch import PolicyModule

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR")
"""Environment variables whose presence means torchrun (or a compatible launcher) started us."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits among the data-parallel ranks. The default is one process on CPU.

    ``group`` is True when a torch.distributed process group is running (also with one rank under
    ``torchrun --nproc_per_node 1``); ``owns_group`` when :func:`init_distributed` started it.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, plots, summaries and the HF export."""
        return self.rank == 0

    @property
    def seed_parts(self) -> tuple[str, ...]:
        """Extra parts of derived sampling seeds: the rank, when there are several."""
        return (f"rank{self.rank}",) if self.world_size > 1 else ()

    # ---- reductions (identity on one rank) -----------------------------------------------------
    def _reduce(self, t: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
        if self.world_size == 1:
            return t
        x = t.detach().to(self.device, copy=True)
        dist.all_reduce(x, op=op)
        return x.to(t.device)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over ranks (a new tensor; ``t`` is left alone)."""
        return self._reduce(t, dist.ReduceOp.SUM)

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` maxed elementwise over ranks."""
        return self._reduce(t, dist.ReduceOp.MAX)

    def sum_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over ranks, in one collective. Every rank must pass the same keys."""
        return self._reduce_dict(values, dist.ReduceOp.SUM)

    def max_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each value maxed over ranks, in one collective. Every rank must pass the same keys."""
        return self._reduce_dict(values, dist.ReduceOp.MAX)

    def _reduce_dict(self, values: dict[str, float], op: dist.ReduceOp) -> dict[str, float]:
        if self.world_size == 1 or not values:
            return dict(values)
        keys = sorted(values)
        reduced = self._reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64), op)
        return dict(zip(keys, reduced.tolist()))

    def all_counts(self, n: int) -> list[int]:
        """Every rank's ``n``, indexed by rank (one SUM collective over a one-hot vector)."""
        if self.world_size == 1:
            return [n]
        onehot = torch.zeros(self.world_size, dtype=torch.float64)
        onehot[self.rank] = n
        return [int(c) for c in self.all_reduce_sum(onehot).tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on some rank."""
        return bool(self.all_reduce_max(torch.tensor([float(flag)])).item())

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, indexed by rank, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's picklable ``obj`` on every rank."""
        return self.gather_objects(obj)[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. building a cached model), then the other ranks."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def shard(self, items: list[Any]) -> list[Any]:
        """This rank's contiguous share of ``items`` (sizes differ by at most one, lower ranks
        first), so that concatenating the shares in rank order gives ``items`` back."""
        lo, hi = shard_bounds(len(items), self.world_size, self.rank)
        return items[lo:hi]

    def close(self) -> None:
        """Destroy the process group if this context started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank's contiguous share of ``n`` items."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``auto`` and ``cuda`` take the local rank's GPU
    (torchrun's ``LOCAL_RANK``); ``cuda:N`` and ``cpu`` are used as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device_name: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """The process context: adopt a running process group (Ray Train), start one from torchrun's
    environment (gloo on CPU, NCCL on CUDA), or return a single-process context."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = resolve_device(device_name, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistContext(rank, world, local_rank, device, group=True)
    if not all(k in os.environ for k in TORCHRUN_ENV):
        return DistContext(device=resolve_device(device_name, 0))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name, local_rank)
    kwargs: dict[str, Any] = {"backend": "gloo", "timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs |= {"backend": "nccl", "device_id": device}
    dist.init_process_group(rank=rank, world_size=world, **kwargs)
    return DistContext(rank, world, local_rank, device, group=True, owns_group=True)


# ---- the policy across ranks: FSDP2 or replicated ---------------------------------------------


def wants_fsdp(ctx: DistContext, mode: str) -> bool:
    """``auto``: FSDP2 when there are several ranks; ``on``: always (needs a process group)."""
    if mode == "on" and not ctx.group:
        raise ValueError(
            "distributed.fsdp=on needs torch.distributed: launch with torchrun (also for one process: "
            "torchrun --nproc_per_node 1 -m dapo_rl train ...), or use distributed.fsdp=auto"
        )
    return mode == "on" or (mode == "auto" and ctx.world_size > 1)


def wrap_policy(
    model: torch.nn.Module, ctx: DistContext, cfg: Any, compute_dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """``model`` as a :class:`dapo_rl.batch.PolicyModule`, sharded with FSDP2 when ``cfg``
    (the ``distributed`` config section) and the world size call for it, else replicated.
    ``compute_dtype`` (``model.dtype``) is where forward and backward run: torch.autocast in a
    replicated policy, FSDP2's MixedPrecisionPolicy in a sharded one."""
    if wants_fsdp(ctx, cfg.fsdp):
        if hasattr(model, "peft_config"):
            raise ValueError(
                "LoRA (model.lora.rank > 0) is not supported with FSDP yet: train the adapters in one "
                "process (the base fits in bf16 compute), or set distributed.fsdp=off (replicated)"
            )
        return fully_shard_policy(PolicyModule(model), compute_dtype)
    return PolicyModule(model, compute_dtype)


def fully_shard_policy(policy: torch.nn.Module, compute_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Shard a :class:`dapo_rl.batch.PolicyModule` with FSDP2: each decoder layer is one unit, the
    rest (embeddings, final norm, LM head, tied or not) is the root unit. Gradients are reduced with
    a SUM (divide factor 1): the trainer's loss weights already hold the global normalisers.
    A ``compute_dtype`` below float32 all-gathers parameters in it for forward and backward and
    reduces gradients in float32 (the sharded master parameters and AdamW states stay float32).
    """
    if not hasattr(FSDPModule, "set_force_sum_reduction_for_comms"):
        raise RuntimeError(
            f"FSDP2 gradient SUM reduction needs torch >= 2.8 (this is {torch.__version__}); upgrade "
            "torch or set distributed.fsdp=off (replicated parameters)"
        )
    mp = MixedPrecisionPolicy()
    if compute_dtype not in (None, torch.float32):
        mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    decoder = policy.module.get_decoder() if hasattr(policy.module, "get_decoder") else None
    for layer in getattr(decoder, "layers", None) or []:
        fully_shard(layer, mp_policy=mp)
    fully_shard(policy, mp_policy=mp)
    register_fsdp_forward_method(policy, "response_logprobs")
    for unit in fsdp_units(policy):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied one
    return policy


def fsdp_units(model: torch.nn.Module) -> list[Any]:
    """The FSDP2 units of ``model`` (root first); empty for a plain module."""
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: torch.nn.Module) -> bool:
    return bool(fsdp_units(model))


@contextlib.contextmanager
def gathered(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Hold the full parameters of an FSDP2 model on every rank for the block (a no-op otherwise,
    or with ``enabled=False``: for a rollout engine that samples from its own copy of the weights).

    Rollout and evaluation decode for a number of steps that differs from rank to rank; with the
    parameters gathered once up front, their forwards run no collective at all. All ranks must
    enter and leave together (gathering and releasing are collectives).
    """
    units = fsdp_units(model) if enabled else []
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:  # the root keeps its parameters after forward (FSDP2's default)
            unit.set_reshard_after_forward(unit is not model, recurse=False)
            unit.reshard()


def sync_gradients(model: torch.nn.Module, ctx: DistContext) -> None:
    """SUM gradients of a replicated model across ranks (FSDP2 already reduced its own)."""
    if ctx.world_size == 1 or is_sharded(model):
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = ctx.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
        offset += g.numel()


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """Global gradient norm before clipping (over all ranks' shards under FSDP2), and clip."""
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def pad_plan(plan: list[list[int]], ctx: DistContext) -> list[list[int]]:
    """A micro-batch plan padded with empty micro-batches to the longest plan over ranks, so every
    rank runs the same number of forwards and backwards (FSDP2 collectives). An empty micro-batch
    is a zero-weight dummy in the trainer."""
    longest = int(ctx.all_reduce_max(torch.tensor([float(len(plan))])).item())
    return plan + [[] for _ in range(longest - len(plan))]
