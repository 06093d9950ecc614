"""The configuration schema: one pydantic section per group of keys, a docstring under every field
(``docs/config.md`` is generated from them), and the derived values computed once in
:class:`DapoConfig`. Loading, overrides and the checks across fields are in :mod:`dapo_rl.config`,
which re-exports every name here.

Units are in the names: ``*_steps`` count rollout (training) steps, ``*_updates`` count optimizer
updates, ``*_tokens`` count tokens, ``prompts_*`` count prompts (groups), ``samples_*`` responses.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dapo_rl.config_async import AsyncConfig
from dapo_rl.config_health import HealthConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class LoraConfig(_Section):
    rank: int = Field(0, ge=0)
    """LoRA rank r; 0 trains every weight (full fine-tuning), > 0 trains only low-rank adapters
    (through ``peft``: ``pip install 'dapo-rl[lora]'``). With ``algorithm.kl_coef > 0`` the reference
    is the base model with the adapters switched off (no second copy)."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator: the adapter's update is scaled by alpha / rank."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapters' input (0 keeps old log-probs and the training forward identical)."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Names of the linear layers that get adapters (leaf names, as in the model's modules)."""


class ModelConfig(_Section):
    path: str | None = None
    """Local Hugging Face model directory (config.json + safetensors + tokenizer). ``null`` uses the
    embedded tiny model, warm-started by ``dapo sft`` on the synthetic task (cached)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """COMPUTE dtype of forward and backward. Master weights and AdamW states are always float32;
    ``bfloat16`` runs the policy under ``torch.autocast`` in one process and with FSDP2's
    MixedPrecisionPolicy (bfloat16 parameters in compute, float32 gradient reduction) across ranks.
    Log-probs, entropy, ratio and loss are float32 either way. Frozen models (the KL reference,
    ``dapo eval``) are stored in this dtype. ``float16`` is refused (it needs a loss scaler)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (slower)."""
    lora: LoraConfig = LoraConfig()
    """LoRA adapters (``rank > 0``) instead of full fine-tuning."""
    trust_remote_code: bool = False
    """Passed to ``from_pretrained``; only enable for model code you trust."""

    @field_validator("dtype")
    @classmethod
    def _no_fp16(cls, value: str) -> str:
        if value == "float16":
            raise ValueError(
                "float16 compute needs a loss scaler, which this trainer does not have: use bfloat16 "
                "(GPUs since Ampere, and CPUs) or float32"
            )
        return value


class SyntheticTaskConfig(_Section):
    num_train: int = Field(20000, ge=1)
    """Number of generated training problems (used when ``data.train_files`` is empty)."""
    num_eval: int = Field(200, ge=1)
    """Number of held-out problems (a disjoint split) used for evaluation."""
    task: Literal["arith", "length"] = "arith"
    """``arith``: the default warm start. ``length``: the same problems and reward, warm-started from a
    teacher that rambles (writes its working again with probability ``ramble``, so a share of
    responses hit the length cap; ``dapo_rl.data.length_task``, preset ``--config length``)."""
    ramble: float = Field(0.6, ge=0.0, lt=1.0)
    """With ``task: length``: the teacher's probability of writing its working once more (up to 3 times)."""


class DataConfig(_Section):
    train_files: list[str] = []
    """Training files (.jsonl, .json, .parquet). Empty: the embedded synthetic arithmetic task."""
    eval_files: list[str] = []
    """Held-out files for periodic evaluation. Empty with the synthetic task: its held-out split."""
    loader: str | None = None
    """Your own dataset: an import path ``module:function`` or ``file.py:function`` called as
    ``fn(split)`` with split ``train``/``eval``, returning PromptRows or dicts with prompt and answer.
    Overrides ``train_files``/``eval_files``."""
    prompt_key: str | None = None
    """Column holding the problem (dotted path allowed). ``null``: auto-detect question/problem/prompt."""
    answer_key: str | None = None
    """Column holding the ground truth (dotted path allowed, e.g. ``reward_model.ground_truth``).
    ``null``: auto-detect answer/ground_truth/reward_model.ground_truth."""
    template: str = "dapo"
    """Prompt template: ``dapo`` (the paper's Answer: line instruction), ``boxed``, ``plain``, a string
    with one ``{problem}``, or an import path to such a string or to ``fn(problem) -> str``."""
    use_chat_template: bool = False
    """Wrap the templated prompt with the tokenizer's chat template (error if it has none)."""
    system_prompt: str | None = None
    """Optional system message when the chat template is used."""
    max_prompt_tokens: int = Field(2048, ge=1)
    """Prompts longer than this many tokens are handled by ``on_long_prompt``."""
    on_long_prompt: Literal["drop", "error"] = "drop"
    """``drop`` (and count) or ``error`` for over-long prompts."""
    on_malformed: Literal["error", "skip"] = "error"
    """``error`` names the file and row of a malformed row; ``skip`` drops and counts it."""
    shuffle: bool = True
    """Shuffle the training rows each epoch (deterministic by seed and epoch)."""
    synthetic: SyntheticTaskConfig = SyntheticTaskConfig()
    """The embedded synthetic task (used when ``train_files`` is empty)."""


class RolloutConfig(_Section):
    engine: str = "hf"
    """Rollout engine name: ``hf`` (batched KV-cache decoding with any HF causal LM, samples from the
    live policy) or ``vllm`` (a colocated in-process vLLM engine; weights pushed after every step;
    docs/vllm.md)."""
    max_response_tokens: int = Field(20480, ge=1)
    """Generation cap L_max in tokens; also the overlong shaping L_max (they cannot drift apart)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature (0 = greedy). Log-probs for the loss use the same temperature."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (1.0 = off)."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling (0 = off)."""
    stop_strings: list[str] = []
    """Extra stop strings; a response ending on one counts as finished (not truncated)."""
    max_batch_sequences: int = Field(256, ge=1)
    """Most sequences decoded at once by the engine (memory bound; vLLM's ``max_num_seqs``)."""
    kv_cache_bytes: int | None = Field(None, ge=1)
    """vllm engine: KV-cache budget in bytes. ``null``: 1 GiB on a CPU (where vLLM would otherwise
    take a fraction of host RAM), ``gpu_memory_utilization`` on a GPU."""
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """vllm engine on a GPU: fraction of the device's memory vLLM may take (weights + KV cache); the
    trainer shares the device, so leave it room. Ignored on a CPU."""
    sleep_mode: bool = False
    """vllm engine on a GPU: sleep (weights offloaded, KV cache freed) between rollouts so training
    gets the memory back; woken before each rollout and weight push. Not available on a CPU."""
    enforce_eager: bool = True
    """vllm engine: no CUDA graphs / torch.compile (starts in seconds; on a GPU ``false`` decodes
    faster after a longer start)."""
    importance_correction: Literal["auto", "none", "tis", "mask"] = "auto"
    """``auto``: ``tis`` when ``async.max_staleness > 0``, else ``none`` (resolved when the config
    loads). Correction for the rollout engine's numerics and, with ``async``, for stale data: each token's
    policy loss is weighted by w = pi_prox / pi_rollout, detached; ``tis`` clamps w at
    ``importance_cap``, ``mask`` drops tokens with w over it (they still count in the token-mean
    denominator) (docs/algorithm.md). Needs the engine's log-probs (the vllm engine always returns them)."""
    importance_cap: float = Field(2.0, ge=1.0)
    """C, the cap of the importance weight (``importance_correction``: tis clamps, mask drops)."""
    verify_weights_every: int = Field(10, ge=0)
    """An engine holding its own weights (vllm) is checked at the first step a run (or a resume) makes
    and every this many steps: a fixed probe scored by it and by the policy, and per-layer weight sums (docs/health.md);
    a mismatch stops the run (exit 3) naming the layers. 0: never."""


class RewardConfig(_Section):
    name: str = "math_dapo"
    """Reward function: ``math_dapo`` (+1/-1, paper), ``math_verify`` (boxed, 1/0), ``gsm8k``,
    ``synthetic``, or an import path ``module:function`` / ``file.py:function`` to your own."""
    timeout_s: float = Field(10.0, gt=0)
    """Per-response verification timeout; a timeout is a wrong answer and is counted."""
    num_workers: int = Field(1, ge=1)
    """Worker processes for isolated (timeout-guarded) verification."""


class OverlongConfig(_Section):
    enable: bool = True
    """Soft overlong punishment (paper eq. 13) added to the reward."""
    buffer_tokens: int = Field(4096, ge=1)
    """L_buf: the penalty ramps over the last ``buffer_tokens`` before ``max_response_tokens``."""
    penalty_factor: float = Field(1.0, ge=0.0)
    """f: the penalty at L_max (floored at -f)."""
    mask_truncated: bool = True
    """Overlong filtering: responses cut at L_max without EOS get loss mask 0 (paper §3.4)."""


class DynamicSamplingConfig(_Section):
    enable: bool = True
    """Drop groups whose filter metric is constant and keep sampling until the batch is full."""
    metric: Literal["acc", "score", "reward"] = "acc"
    """Metric whose spread makes a group informative: raw accuracy (default), task score, or the
    length-shaped reward."""
    filter: str = "std"
    """Group filter: ``std`` (spread > 0 of ``metric``) or an import path ``module:function`` /
    ``file.py:function`` called as ``fn(group: GroupView) -> bool``."""
    oversample: float = Field(3.0, ge=1.0)
    """A generation round samples ``ceil(oversample x prompts_per_step)`` prompts."""
    max_rounds: int = Field(10, ge=1)
    """Most generation rounds per training step."""
    on_shortfall: Literal["train", "error"] = "train"
    """After ``max_rounds`` with too few groups: train on what was collected, or stop with an error."""
    carry_over: bool = False
    """Keep surplus informative groups for the next step (they are then one step old)."""


class AlgorithmConfig(_Section):
    advantage: str = "grpo"
    """Advantage estimator (group-relative outcome advantage)."""
    norm_adv_by_std: bool = True
    """Divide by the group's std (unbiased). ``false`` is Dr. GRPO."""
    adv_eps: float = Field(1e-6, gt=0)
    """Epsilon added to the group std."""
    clip_ratio_low: float = 0.2
    """eps_low: the ratio is clipped below at 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.28
    """eps_high (clip-higher): the ratio is clipped above at 1 + clip_ratio_high."""
    clip_ratio_c: float | None = None
    """Dual-clip constant c > 1 for negative advantages; ``null`` turns it off (paper recipe: 10)."""
    loss_agg_mode: str = "token-mean"
    """``token-mean`` (DAPO), ``seq-mean-token-sum``, ``seq-mean-token-mean``,
    ``seq-mean-token-sum-norm``, ``group-token-mean``."""
    loss_norm_tokens: int | None = None
    """Denominator length for ``seq-mean-token-sum-norm``; ``null`` = max_response_tokens."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of the KL term to a frozen reference model (0: off, no reference model is loaded)."""
    kl_estimator: Literal["k1", "abs", "k2", "k3"] = "k3"
    """KL estimator on d = logp - ref_logp."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (entropy is always logged)."""
    max_importance_ratio: float | None = None
    """Skip a micro-batch whose mean ratio exceeds this (``null``: off)."""


class BatchConfig(_Section):
    prompts_per_step: int = Field(512, ge=1)
    """P: informative prompt groups trained on per rollout step."""
    samples_per_prompt: int = Field(16, ge=1)
    """G: responses sampled per prompt (the group size)."""
    prompts_per_update: int = Field(32, ge=1)
    """Prompt groups per optimizer mini-batch (a group is never split across updates)."""
    epochs_per_step: int = Field(1, ge=1)
    """Passes over the step's data; updates per step = P / prompts_per_update x epochs_per_step."""
    micro_batch_tokens: int = Field(16384, ge=1)
    """Token budget (prompt + response) of one forward/backward micro-batch."""
    forward_micro_batch_tokens: int | None = Field(None, ge=1)
    """Token budget of one micro-batch of the forward-only passes (old log-probs, KL reference),
    which run under ``torch.no_grad`` and keep no activations for backward, so they fit more
    tokens. ``null``: 2 x ``micro_batch_tokens``. Log-probs do not depend on it."""


class OptimConfig(_Section):
    lr: float = Field(1e-6, gt=0, allow_inf_nan=False)
    """AdamW peak learning rate (finite: ``inf`` and ``nan`` are refused)."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value (``null``: off)."""
    warmup_updates: int = Field(320, ge=0)
    """Linear warm-up length in OPTIMIZER UPDATES (paper: 20 rollout steps x 16 updates = 320)."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate shape after warm-up (decays over the run's total optimizer updates)."""
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Floor of cosine/linear decay as a fraction of ``lr``."""


class TrainConfig(_Section):
    total_steps: int = Field(1000, ge=1)
    """Number of rollout (training) steps."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda``, ``cuda:N``."""
    max_nonfinite_updates: int = Field(3, ge=1)
    """Abort after this many consecutive updates with a non-finite loss or gradient (each is skipped)."""
    max_empty_steps: int = Field(10, ge=0)
    """Stop the run as collapsed (exit code 3) after this many consecutive rollout steps with no
    trainable group (every group's responses scored alike); 0: never. One now and then is normal."""
    num_threads: int | None = None
    """torch CPU threads (``null``: torch's default)."""


class DistributedConfig(_Section):
    fsdp: Literal["auto", "on", "off"] = "auto"
    """How the policy (and the reference model) live across data-parallel ranks. ``auto``: sharded
    with FSDP2 (``fully_shard``, one unit per decoder layer) when there are several ranks; ``on``:
    sharded even with one rank (needs torchrun, e.g. ``--nproc_per_node 1``); ``off``: replicated on
    every rank, gradients all-reduced (summed). In one plain process (no torchrun) ``auto`` and ``off``
change nothing, and ``on`` is an error."""
    timeout_s: float = Field(1800.0, gt=0)
    """Timeout of torch.distributed collectives in seconds (a rank that waits longer fails)."""

    @field_validator("fsdp", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML reads a bare on / off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="before")
    @classmethod
    def _removed_mixed_precision(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mixed_precision" in data:
            raise ValueError(
                f"distributed.mixed_precision={data['mixed_precision']!r} was removed: model.dtype is now "
                "the compute precision in every launch mode (master weights and optimizer states stay "
                "float32). Delete the key and set model.dtype=bfloat16 for bf16 compute."
            )
        return data


class LoggingConfig(_Section):
    run_dir: str = "runs"
    """Parent folder of run directories."""
    run_name: str | None = None
    """Run directory name; ``null``: a timestamp."""
    tensorboard: bool = True
    """Write TensorBoard event files (needs the ``tensorboard`` package)."""
    wandb: bool = False
    """Log to Weights & Biases (needs the ``tracking`` extra)."""
    wandb_project: str = "dapo-rl"
    """W&B project name."""
    plots: bool = True
    """Write PNG plots of the metrics at the end of the run (and at each checkpoint)."""
    progress: bool = True
    """Show a progress bar with live reward, accuracy and keep rate."""
    generations_per_step: int = Field(4, ge=0)
    """Groups (prompt + all its responses) per step written to ``generations.jsonl``, kept and
    filtered-out ones alike; 0: none. Every evaluation writes all its responses to ``eval/``."""


class CheckpointConfig(_Section):
    every_steps: int = Field(50, ge=0)
    """Write a checkpoint every this many rollout steps (0: only at the end)."""
    keep_last: int = Field(2, ge=1)
    """Checkpoints to keep (older ones are deleted)."""
    save_final: bool = True
    """Write a checkpoint when the run ends."""


class EvalConfig(_Section):
    every_steps: int = Field(0, ge=0)
    """Evaluate on the held-out set every this many rollout steps (0: only before and after)."""
    max_problems: int | None = None
    """Evaluate on at most this many held-out problems (``null``: all)."""
    k: int = Field(32, ge=1)
    """Samples per problem for avg@k / pass@k / maj@k (paper: AIME avg@32)."""
    temperature: float = Field(1.0, ge=0.0)
    """Evaluation sampling temperature (paper 1.0)."""
    top_p: float = Field(0.7, gt=0.0, le=1.0)
    """Evaluation nucleus mass (paper 0.7)."""
    max_response_tokens: int | None = None
    """Evaluation generation cap; ``null``: rollout.max_response_tokens."""


class DapoConfig(_Section):
    """The whole configuration of a DAPO run."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    overlong: OverlongConfig = OverlongConfig()
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    batch: BatchConfig = BatchConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    distributed: DistributedConfig = DistributedConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    async_: AsyncConfig = Field(AsyncConfig(), alias="async")  # YAML key `async` (a Python keyword)
    health: HealthConfig = HealthConfig()

    # ---- derived values (computed here once) --------------------------------------------------
    @property
    def updates_per_step(self) -> int:
        """Optimizer updates per rollout step (for a full batch)."""
        b = self.batch
        return b.prompts_per_step // b.prompts_per_update * b.epochs_per_step

    @property
    def prompts_per_round(self) -> int:
        """Prompts sampled by one generation round."""
        factor = self.dynamic_sampling.oversample if self.dynamic_sampling.enable else 1.0
        return math.ceil(factor * self.batch.prompts_per_step)

    @property
    def total_updates(self) -> int:
        """Optimizer updates over the whole run (assuming full batches), the schedule's length."""
        return self.train.total_steps * self.updates_per_step

    @property
    def loss_norm_tokens(self) -> int:
        return self.algorithm.loss_norm_tokens or self.rollout.max_response_tokens

    @property
    def eval_max_response_tokens(self) -> int:
        return self.eval.max_response_tokens or self.rollout.max_response_tokens
