"""The TRL side of ``step_vs_trl.py``: GRPOTrainer (``loss_type="dapo"``) on the shared workload.

Runs with the python of ``benchmarks/.venv-trl`` (TRL is a benchmark-only dependency, never one of
the project's) and never imports ``dapo_rl``. ``step_vs_trl.py`` starts it as

    benchmarks/.venv-trl/bin/python benchmarks/_trl_worker.py WORKDIR

reading ``WORKDIR/workload.json`` and writing ``WORKDIR/trl.json``: wall time of every optimizer step
(a TrainerCallback, ``on_step_begin`` to ``on_step_end``), the time inside generation (the
``transformers`` ``generate`` call) and inside generation + scoring + advantages, the generated
tokens, and how many log-prob forward passes ran with and without gradients (an old-log-prob or
reference pass would be one without).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _step_workload import digit_fraction


def digit_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """TRL's reward signature around the shared reward."""
    return [digit_fraction(text) for text in completions]


def grpo_config(w: dict[str, Any], output_dir: Path) -> Any:
    import torch
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=w["warmup"] + w["steps"],
        # one optimizer update per step over all prompts x samples, one micro-batch (like ours)
        per_device_train_batch_size=w["prompts_per_step"] * w["samples_per_prompt"],
        gradient_accumulation_steps=1,
        num_generations=w["samples_per_prompt"],
        num_iterations=1,
        max_completion_length=w["max_new_tokens"],
        temperature=w["temperature"],
        top_p=w["top_p"],
        top_k=0,
        loss_type="dapo",
        epsilon=w["clip_low"],
        epsilon_high=w["clip_high"],
        beta=0.0,
        scale_rewards="group",
        mask_truncated_completions=False,
        use_vllm=False,
        learning_rate=w["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=w["weight_decay"],
        max_grad_norm=w["grad_clip"],
        # TRL's defaults differ from ours here: no bf16 autocast, no activation recomputation
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        model_init_kwargs={"dtype": torch.float32},
        seed=w["seed"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


class StageClock:
    """Seconds spent inside wrapped methods, per step, and the log-prob passes by grad mode."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Any, count_tokens: bool = False) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            import torch

            if name == "logprobs":
                grad = "grad" if torch.is_grad_enabled() else "no_grad"
                self.current[f"logprob_calls_{grad}"] += 1
            t = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            finally:
                self.current[f"{name}_s"] += time.perf_counter() - t
            if count_tokens:  # _generate_single_turn returns (completion_ids, logprobs)
                ids = out[0]
                self.current["tokens_generated"] += sum(len(x) for x in ids)
                self.current["completions"] += len(ids)
            return out

        return timed

    def take(self) -> dict[str, float]:
        out, self.current = dict(self.current), defaultdict(float)
        return out


def main(workdir: Path) -> None:
    w = json.loads((workdir / "workload.json").read_text())
    import torch

    torch.set_num_threads(w["threads"])
    import accelerate
    import datasets
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    clock = StageClock()
    steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.take()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            row = {"step_s": time.perf_counter() - self.t0, **clock.take()}
            row["threads"] = torch.get_num_threads()
            steps.append(row)
            print(f"[trl] step {len(steps)}: {row['step_s']:.2f} s", file=sys.stderr, flush=True)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and steps and "completions/mean_length" in logs:
                steps[-1]["mean_completion_len"] = float(logs["completions/mean_length"])
                steps[-1]["reward_mean"] = float(logs.get("reward", float("nan")))
                steps[-1]["reward_std"] = float(logs.get("reward_std", float("nan")))

    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in w["prompts"]]
    trainer = GRPOTrainer(
        model=w["model_dir"],
        reward_funcs=digit_reward,
        args=grpo_config(w, workdir / "trl_out"),
        train_dataset=datasets.Dataset.from_list(rows),
        callbacks=[StepTimer()],
    )
    trainer._generate_single_turn = clock.wrap("generate", trainer._generate_single_turn, count_tokens=True)
    trainer._generate_and_score_completions = clock.wrap(
        "generate_and_score", trainer._generate_and_score_completions
    )
    trainer._get_per_token_logps_and_entropies = clock.wrap(
        "logprobs", trainer._get_per_token_logps_and_entropies
    )
    tokenizer = trainer.processing_class
    t = time.perf_counter()
    trainer.train()
    result = {
        "steps": steps,
        "train_wall_s": time.perf_counter() - t,
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "accelerate": accelerate.__version__,
            "datasets": datasets.__version__,
            "python": sys.version.split()[0],
        },
        "tokenizer_class": type(tokenizer).__name__,
        "eos_token_ids": list(trainer.eos_token_ids),
        # TRL's own rule (no vLLM): the old-log-prob pass runs unless generation is aligned with updates
        "old_logprob_pass_by_rule": trainer.args.gradient_accumulation_steps
        % (trainer.args.steps_per_generation * trainer.num_iterations)
        != 0,
    }
    (workdir / "trl.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
