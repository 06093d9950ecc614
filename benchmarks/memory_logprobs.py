"""Peak memory of token log-probs + entropy + the DAPO loss and its backward, over a large vocabulary:
our chunked path (:func:`dapo_rl.algorithm.logprobs.logprobs_from_hidden`) vs a naive full fp32 logits
tensor.

    .venv/bin/python benchmarks/memory_logprobs.py                  # V=151,936, 4,096 tokens, H=896
    .venv/bin/python benchmarks/memory_logprobs.py --tokens 1024    # quicker

Each path runs in a fresh subprocess. The inputs (final hidden states ``[N, H]``, the output
projection ``[V, H]``, labels, old log-probs, advantages) are built first; then the kernel's peak
resident-set high-water mark is reset (``/proc/self/clear_refs``), the path runs forward and
backward (token-mean clipped loss, eps 0.2/0.28; entropy computed as a metric), and the figure is
``VmHWM - VmRSS before``: the memory the computation itself needed, *including* the gradient of the
projection weight (``V x H`` fp32, which both paths must hold) and of the hidden states. The two
paths' losses and gradients are also compared, so the smaller peak is not bought with a wrong
answer.

Writes benchmarks/results/memory_logprobs.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import write_result

MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _inputs(tokens: int, hidden: int, vocab: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(tokens, hidden, generator=g)).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * hidden**-0.5).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    adv = torch.where(torch.rand(tokens, generator=g) < 0.5, -1.0, 1.0)
    # old log-probs near the current ones, so some ratios clip
    noise = 0.3 * torch.randn(tokens, generator=g)
    return h, w, labels, adv, noise


def _loss(logp, old_logp, adv):
    import torch

    from dapo_rl.algorithm.policy_loss import clipped_policy_loss

    mask = torch.ones_like(logp, dtype=torch.bool)[None]
    loss, _ = clipped_policy_loss(logp[None], old_logp[None], adv[None], mask, 0.2, 0.28)
    return loss.sum() / mask.sum()


def worker(path: str, tokens: int, hidden: int, vocab: int, chunk: int, out: str) -> None:
    import torch

    torch.manual_seed(0)
    h, w, labels, adv, noise = _inputs(tokens, hidden, vocab, seed=0)
    with torch.no_grad():  # old log-probs: computed chunk-wise outside the measured region
        from dapo_rl.algorithm.logprobs import logprobs_from_hidden

        old_logp = logprobs_from_hidden(h, w, labels, chunk_tokens=chunk)[0] + noise
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    if path == "naive":
        logits = h @ w.T  # [N, V] fp32
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, labels[:, None]).squeeze(-1)
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    else:
        logp, entropy = logprobs_from_hidden(h, w, labels, chunk_tokens=chunk, with_entropy=True)
        entropy = entropy.detach()
    loss = _loss(logp, old_logp, adv)
    loss.backward()
    peak = _status_kib("VmHWM")
    result = {
        "path": path,
        "peak_above_inputs_mib": (peak - before) / 1024,
        "rss_before_mib": before / 1024,
        "loss": loss.item(),
        "entropy_mean": entropy.mean().item(),
        "grad_w_norm": w.grad.norm().item(),
        "grad_h_norm": h.grad.norm().item(),
    }
    torch.save({"grad_w": w.grad[:4096].clone(), "grad_h": h.grad.clone()}, out + ".pt")
    Path(out).write_text(json.dumps(result))


def run_path(path: str, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / f"{path}.json"
    cmd = [
        sys.executable, __file__, "--worker", path, "--tokens", str(args.tokens), "--hidden",
        str(args.hidden), "--vocab", str(args.vocab), "--chunk", str(args.chunk), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=896, help="896: Qwen2.5-0.5B")
    parser.add_argument("--vocab", type=int, default=151_936, help="151,936: the Qwen2.5 vocabulary")
    parser.add_argument("--chunk", type=int, default=0, help="our tokens per chunk (0: the automatic choice)")
    parser.add_argument("--worker", choices=["naive", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.tokens, args.hidden, args.vocab, args.chunk, args.out)
        return

    import tempfile

    import torch

    from dapo_rl.algorithm.logprobs import auto_chunk_tokens

    args.chunk = args.chunk or auto_chunk_tokens(args.vocab)  # resolved once, passed to both workers
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        naive, ours = run_path("naive", args, tmp), run_path("ours", args, tmp)
        gn, go = torch.load(tmp / "naive.json.pt"), torch.load(tmp / "ours.json.pt")
        max_dw = (gn["grad_w"] - go["grad_w"]).abs().max().item()
        max_dh = (gn["grad_h"] - go["grad_h"]).abs().max().item()
    ratio = ours["peak_above_inputs_mib"] / naive["peak_above_inputs_mib"]
    logits_mib = args.tokens * args.vocab * 4 / MIB
    weight_mib = args.vocab * args.hidden * 4 / MIB
    figures = {
        "naive": naive,
        "ours": ours,
        "ratio_ours_over_naive": ratio,
        "one_fp32_logits_tensor_mib": logits_mib,
        "weight_grad_mib": weight_mib,
        "loss_abs_diff": abs(naive["loss"] - ours["loss"]),
        "entropy_mean_abs_diff": abs(naive["entropy_mean"] - ours["entropy_mean"]),
        "grad_w_max_abs_diff_first_4096_rows": max_dw,
        "grad_h_max_abs_diff": max_dh,
    }
    table = "\n".join(
        [
            f"Vocabulary {args.vocab:,}, {args.tokens:,} response tokens, hidden {args.hidden}, fp32; "
            f"one full logits tensor = {logits_mib:,.0f} MiB, the weight gradient = {weight_mib:,.0f} MiB.",
            "",
            "| path | peak memory above inputs (MiB) | loss | mean entropy |",
            "|---|---|---|---|",
            f"| naive (full fp32 logits, log_softmax, autograd) | {naive['peak_above_inputs_mib']:,.0f} | "
            f"{naive['loss']:.6f} | {naive['entropy_mean']:.5f} |",
            f"| ours (`logprobs_from_hidden`, chunk {args.chunk}) | {ours['peak_above_inputs_mib']:,.0f} | "
            f"{ours['loss']:.6f} | {ours['entropy_mean']:.5f} |",
            f"| **ratio ours / naive** | **{ratio:.3f}** | | |",
            "",
            f"Gradients agree: max |d grad_hidden| = {max_dh:.2e}, max |d grad_W| (first 4,096 rows) = "
            f"{max_dw:.2e}.",
        ]
    )
    path = write_result("memory_logprobs", vars(args) | {"worker": None, "out": None}, figures, table)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
