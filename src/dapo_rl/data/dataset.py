"""A resumable, deterministically shuffled stream of prompts, and prompt-length filtering.

:class:`PromptDataset` visits every row once per epoch in an order fixed by ``(seed, epoch)``
(``numpy.random.default_rng(SeedSequence([seed, epoch]))``), so each epoch is reshuffled and the
whole stream is reproducible. :meth:`PromptDataset.next_batch` crosses epoch boundaries.
:meth:`~PromptDataset.state_dict` holds the seed, epoch and position (plus the row count and a
fingerprint of the row uids, checked on load), so a resumed run continues with exactly the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from dapo_rl.data.types import PromptRow


def _fingerprint(rows: Sequence[PromptRow]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.uid.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class PromptDataset:
    """An endless stream of rows: shuffled per epoch by ``(seed, epoch)``, or in file order when
    ``shuffle`` is False."""

    def __init__(self, rows: Sequence[PromptRow], seed: int = 0, shuffle: bool = True) -> None:
        if not rows:
            raise ValueError("PromptDataset needs at least one row")
        self.rows = list(rows)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._fingerprint = _fingerprint(self.rows)
        self._order = self._epoch_order(0)

    def __len__(self) -> int:
        return len(self.rows)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        return rng.permutation(len(self.rows))

    def epoch_order(self, epoch: int) -> list[int]:
        """The row indices of ``epoch`` in visiting order."""
        return self._epoch_order(epoch).tolist()

    def next_batch(self, n: int) -> list[PromptRow]:
        """The next ``n`` rows of the stream (across epoch boundaries when needed)."""
        if n < 0:
            raise ValueError(f"batch size must be >= 0, got {n}")
        batch: list[PromptRow] = []
        while len(batch) < n:
            if self.position == len(self.rows):
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            take = min(n - len(batch), len(self.rows) - self.position)
            batch.extend(self.rows[i] for i in self._order[self.position : self.position + take])
            self.position += take
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream: ``{"seed", "epoch", "position", "shuffle",
        "num_rows", "fingerprint"}`` (plain ints and strings, JSON-safe)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "shuffle": self.shuffle,
            "num_rows": len(self.rows),
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; a different row set is a ``ValueError``."""
        if state["num_rows"] != len(self.rows) or state["fingerprint"] != self._fingerprint:
            raise ValueError(
                f"dataset state was saved for {state['num_rows']} rows (fingerprint {state['fingerprint']}) "
                f"but this dataset has {len(self.rows)} rows (fingerprint {self._fingerprint}); "
                "the data or its filtering changed"
            )
        position = int(state["position"])
        if not 0 <= position <= len(self.rows):
            raise ValueError(f"dataset state position {position} is outside 0..{len(self.rows)}")
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        self.epoch = int(state["epoch"])
        self.position = position
        self._order = self._epoch_order(self.epoch)


def filter_prompt_length(
    rows: Sequence[PromptRow],
    tokenizer_fn: Callable[[PromptRow], int],
    max_prompt_tokens: int,
    policy: Literal["drop", "error"] = "drop",
) -> tuple[list[PromptRow], int]:
    """Keep the rows whose prompt has at most ``max_prompt_tokens`` tokens (``tokenizer_fn(row)``).

    ``policy="drop"`` drops the others and returns their count; ``policy="error"`` raises
    ``ValueError`` naming the first too-long row's uid and its length.
    """
    if policy not in ("drop", "error"):
        raise ValueError(f"policy must be 'drop' or 'error', got {policy!r}")
    kept: list[PromptRow] = []
    dropped = 0
    for row in rows:
        length = int(tokenizer_fn(row))
        if length <= max_prompt_tokens:
            kept.append(row)
        elif policy == "error":
            raise ValueError(
                f"prompt of row {row.uid} has {length} tokens, more than max_prompt_tokens={max_prompt_tokens}"
            )
        else:
            dropped += 1
    return kept, dropped
