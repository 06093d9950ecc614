"""Asynchronous rollouts end to end on a tiny random model: eta = 0 through the rollout worker is the
synchronous trainer bit for bit; eta = 1, 2 with the worker running concurrently equal the same
schedule run serially in one process (timing cannot change results); the staleness bound; exact
resume after SIGKILL; a worker killed or hung from outside ends the run with exit code 5 and a
checkpoint that resumes exactly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dapo_rl.config import load_config
from dapo_rl.errors import EXIT_WORKER
from dapo_rl.plots import plotted_keys
from dapo_rl.trainer import Trainer
from tests.helpers_run import (
    SMALL,
    assert_same_run,
    kill_after_checkpoint,
    logged_step,
    quiet_env,
    save_random_tiny_model,
    step_metrics,
    wait_until,
)

pytestmark = pytest.mark.slow

#: async metrics that depend on timing (how long each side waited, how far the worker is ahead)
TIMINGS = (
    "reward/seconds", "async/trainer_wait_s", "async/rollout_wait_s", "async/idle_ratio_trainer",
    "async/idle_ratio_rollout", "async/queue_depth",
)  # fmt: skip
QUIET = ["logging.plots=false", "logging.tensorboard=false", "logging.progress=false", "eval.every_steps=0"]
ASYNC = ["rollout.importance_correction=tis", "async.worker_threads=1", "train.num_threads=1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def _keep_threads() -> object:
    threads = torch.get_num_threads()  # in-process trainers set train.num_threads
    yield
    torch.set_num_threads(threads)


def _fit(tmp: Path, name: str, overrides: list[str]) -> Trainer:
    cfg = load_config(None, [f"logging.run_dir={tmp}", f"logging.run_name={name}", *QUIET, *overrides])
    trainer = Trainer(cfg)
    trainer.fit()
    return trainer


def _same(a: Trainer, b: Trainer, tmp: Path, names: tuple[str, str], extra_prefix: str = "") -> None:
    """Bit-for-bit: the final weights and every non-timing metric of every step."""
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    ma, mb = step_metrics(tmp / names[0]), step_metrics(tmp / names[1])
    assert sorted(ma) == sorted(mb)
    for step in ma:
        timing = ("perf/", *TIMINGS)
        ra = {k: v for k, v in ma[step].items() if not k.startswith(timing)}
        rb = {k: v for k, v in mb[step].items() if not k.startswith(timing)}
        extra = set(rb) - set(ra)
        assert all(k.startswith(extra_prefix) for k in extra) if extra_prefix else not extra, extra
        for key in ra:
            assert rb[key] == ra[key], (step, key, ra[key], rb[key])


def test_eta0_through_the_worker_is_the_synchronous_trainer(model_dir: Path, tmp_path: Path) -> None:
    """5 steps of the tiny default's settings (random model: rewards from lengths), 1 thread each."""
    base = [
        f"model.path={model_dir}", "train.total_steps=5", "train.num_threads=1", "dynamic_sampling.metric=reward",
        "checkpoint.every_steps=0", "eval.max_problems=4",
    ]  # fmt: skip
    sync = _fit(tmp_path, "sync", base)
    worker = _fit(tmp_path, "worker", [*base, "async.enable=true", "async.worker_threads=1"])
    _same(sync, worker, tmp_path, ("sync", "worker"), extra_prefix="async/")
    rows = step_metrics(tmp_path / "worker")
    assert all(r["async/staleness_max"] == 0 and r["async/version"] == s - 1 for s, r in rows.items())


@pytest.mark.parametrize("eta", [1, 2])
def test_concurrent_worker_equals_the_serial_schedule(model_dir: Path, tmp_path: Path, eta: int) -> None:
    common = [*SMALL, f"model.path={model_dir}", "train.total_steps=5", f"async.max_staleness={eta}", *ASYNC]
    common += ["dynamic_sampling.carry_over=true", "checkpoint.every_steps=0"]
    overlap = _fit(tmp_path, "overlap", common)
    serial = _fit(tmp_path, "serial", [*common, "async.overlap=false"])
    _same(serial, overlap, tmp_path, ("serial", "overlap"))
    for step, row in step_metrics(tmp_path / "overlap").items():
        assert row["async/version"] == max(0, step - 1 - eta)
        trained = row["sampling/groups_trained"]
        hist = {int(k.rsplit("/", 1)[1]): v for k, v in row.items() if k.startswith("async/staleness_hist/")}
        assert set(hist) == set(range(eta + 1)) and sum(hist.values()) == trained  # within [0, eta]
        assert 0 <= row["async/staleness_max"] <= eta
        if step > eta + 1:  # steady state: every trained group is exactly eta versions old
            assert hist[eta] == trained and row["async/staleness_mean"] == eta
    # carried-over surplus is eta + 1 versions old in steady state: dropped and counted, not trained
    assert sum(r["async/dropped_stale_groups"] for r in step_metrics(tmp_path / "overlap").values()) > 0
    logged = {k for row in step_metrics(tmp_path / "overlap").values() for k in row}
    assert {k for k in plotted_keys() if k.startswith("async/")} <= logged  # plots/async.png's lines


# ---- the command line: resume, a lost worker ---------------------------------------------------


def _cmd(model: Path, run_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dapo_rl", "train", f"model.path={model}", f"logging.run_dir={run_dir}",
        f"logging.run_name={name}", *SMALL, *ASYNC, *QUIET, *extra,
    ]  # fmt: skip


RESUME = (
    "train.total_steps=6",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=5",
    "async.max_staleness=2",
)
RESUME += ("async.heartbeat_s=3",)


@pytest.fixture(scope="module")
def ref_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted eta = 2 run that the killed ones must equal."""
    tmp = tmp_path_factory.mktemp("ref")
    cmd = _cmd(model_dir, tmp, "ref", *RESUME)
    out = subprocess.run(cmd, capture_output=True, text=True, env=quiet_env(tmp), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "ref"


def _resume(run: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dapo_rl", "train", "--resume", str(run)],
        capture_output=True, text=True, env=quiet_env(tmp), timeout=300,
    )  # fmt: skip


def test_sigkill_then_resume_equals_uninterrupted(model_dir: Path, ref_run: Path, tmp_path: Path) -> None:
    """eta = 2, killed right after checkpoint 2 (the worker generating ahead) and once step 3 is
    logged (the trainer in step 4); both resumes give the uninterrupted run's records and weights."""
    env = quiet_env(tmp_path)
    kill_after_checkpoint(_cmd(model_dir, tmp_path, "k1", *RESUME), tmp_path / "k1", 2, env)
    cmd = _cmd(model_dir, tmp_path, "k2", *RESUME)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_until(proc, logged_step(tmp_path / "k2" / "metrics.jsonl", '"step": 3'))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "k2" / "summary.json").exists(), "the run finished before it was killed"
    for name in ("k1", "k2"):
        out = _resume(tmp_path / name, tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        assert_same_run(ref_run, tmp_path / name, [1, 2, 3, 4, 5, 6], TIMINGS)


def _worker_pid(parent: int) -> int | None:
    """The rollout worker: the trainer's child started by multiprocessing's spawn."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    return None


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_lost_worker_ends_the_run_with_exit_5_and_a_checkpoint_that_resumes(
    model_dir: Path, ref_run: Path, tmp_path: Path, how: str
) -> None:
    """No periodic checkpoint: the one written at the loss holds the batches received so far, the
    worker's state after them and any older weights the next batches need; it resumes exactly."""
    env = quiet_env(tmp_path)
    cmd = _cmd(model_dir, tmp_path, how, *RESUME, "checkpoint.every_steps=0")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_until(proc, logged_step(tmp_path / how / "metrics.jsonl", '"step": 1'))
    pid = _worker_pid(proc.pid)
    assert pid is not None
    os.kill(pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    start = time.time()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_WORKER, stderr[-3000:]
    assert time.time() - start < 60
    if how == "killed":
        assert "the rollout worker" in stderr and "died (signal 9)" in stderr
    else:
        assert "sent nothing for" in stderr and "async.heartbeat_s=3" in stderr and "hung" in stderr
    assert "--resume" in stderr
    ckpts = sorted((tmp_path / how / "checkpoints").glob("step_*"))
    assert ckpts and (ckpts[-1] / "COMPLETE").exists()
    out = _resume(tmp_path / how, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_run(ref_run, tmp_path / how, [1, 2, 3, 4, 5, 6], TIMINGS)


def test_a_reward_the_worker_cannot_receive_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    from dapo_rl.errors import UsageError
    from dapo_rl.rewards.synthetic import synthetic_reward

    cfg = load_config(
        None, [f"logging.run_dir={tmp_path}", "logging.run_name=lam", *QUIET, *SMALL, *ASYNC,
               f"model.path={model_dir}", "async.max_staleness=1", "train.total_steps=1"],
    )  # fmt: skip
    trainer = Trainer(cfg, reward_fn=lambda *a, **k: synthetic_reward(*a, **k))
    with pytest.raises(UsageError, match=r"cannot receive the reward function .*async\.overlap=false"):
        trainer.fit()


def test_an_error_in_the_worker_is_the_same_error_in_the_trainer(model_dir: Path, tmp_path: Path) -> None:
    """dynamic_sampling.on_shortfall=error raised in the worker process reaches fit() as the same
    ShortfallError (so the same exit code) as without the worker."""
    from dapo_rl.sampling import ShortfallError

    never = [
        *SMALL,
        *ASYNC,
        f"model.path={model_dir}",
        "dynamic_sampling.metric=acc",
        "dynamic_sampling.max_rounds=1",
    ]
    never += ["dynamic_sampling.on_shortfall=error", "train.total_steps=2"]  # a random model is never right
    for name, extra in (("sync", []), ("worker", ["async.max_staleness=1"])):
        cfg = load_config(
            None, [f"logging.run_dir={tmp_path}", f"logging.run_name={name}", *QUIET, *never, *extra]
        )
        with pytest.raises(
            ShortfallError, match="collected 0 informative groups of the 4 needed after 1 rounds"
        ):
            Trainer(cfg).fit()


def test_freshest_weights_mode_keeps_the_bound(model_dir: Path, tmp_path: Path) -> None:
    """async.pin_versions=false: each batch from the freshest published version, never staler than
    eta (which version depends on timing, so only the bound is checked)."""
    _fit(tmp_path, "fresh", [*SMALL, *ASYNC, f"model.path={model_dir}", "train.total_steps=4", "async.max_staleness=2",
                             "async.pin_versions=false", "checkpoint.every_steps=0"])  # fmt: skip
    rows = step_metrics(tmp_path / "fresh")
    assert sorted(rows) == [1, 2, 3, 4]
    for step, row in rows.items():
        assert max(0, step - 3) <= row["async/version"] <= step - 1 and 0 <= row["async/staleness_max"] <= 2


def test_switching_modes_on_resume(model_dir: Path, tmp_path: Path) -> None:
    """A synchronous run's checkpoint continues with the worker (from its data position); a
    checkpoint holding batches made ahead refuses to continue synchronously, saying why."""
    from dapo_rl.errors import UsageError

    base = [*SMALL, *ASYNC, f"model.path={model_dir}", "checkpoint.every_steps=1", "checkpoint.keep_last=5"]
    _fit(tmp_path, "sync", [*base, "train.total_steps=2"])
    cfg = load_config(None, [*QUIET, *base, "train.total_steps=4", "async.max_staleness=1"])
    Trainer(cfg, run_dir=tmp_path / "sync", resume=True).fit()
    rows = step_metrics(tmp_path / "sync")
    assert sorted(rows) == [1, 2, 3, 4] and "async/version" not in rows[2]
    assert [rows[s]["async/version"] for s in (3, 4)] == [2, 2]  # version max(2, s - 2): resumed at 2
    assert all(rows[s]["async/staleness_max"] <= 1 for s in (3, 4))
    shutil.rmtree(tmp_path / "sync" / "checkpoints" / "step_000004")  # step 3's holds batch 4, made ahead
    cfg = load_config(None, [*QUIET, *base, "train.total_steps=6"])
    with pytest.raises(UsageError, match="batches the rollout worker generated ahead"):
        Trainer(cfg, run_dir=tmp_path / "sync", resume=True)


def test_plain_loss_takes_its_ratio_against_the_behaviour_logprobs(model_dir: Path, tmp_path: Path) -> None:
    """``async.decoupled_loss=false``: no recomputed proximal log-probs and no behaviour weight; the
    old log-probs of the ratio are the rollout's own, so the trainer-vs-rollout gap it logs is 0,
    where the decoupled loss (same schedule, same batches at step 1) sees the policy's drift."""
    common = [*SMALL, f"model.path={model_dir}", "train.total_steps=4", "async.max_staleness=1", *ASYNC]
    common += ["async.overlap=false", "checkpoint.every_steps=0"]
    decoupled = _fit(tmp_path, "decoupled", common)
    plain = _fit(
        tmp_path, "plain", [*common, "async.decoupled_loss=false", "rollout.importance_correction=auto"]
    )
    assert plain.cfg.rollout.importance_correction == "none"
    rows_d, rows_p = step_metrics(tmp_path / "decoupled"), step_metrics(tmp_path / "plain")
    trained = [s for s, row in rows_p.items() if row["sampling/groups_trained"]]
    assert len(trained) >= 3
    for step in trained:
        assert rows_p[step]["rollout/logprob_abs_diff_max"] == 0.0, step  # old = behaviour, exactly
        assert "rollout/is_weight_mean" not in rows_p[step]
        assert "rollout/is_weight_mean" in rows_d[step]
    # from step 2 the batch is one version stale: the recomputed proximal log-probs differ from it
    assert all(rows_d[s]["rollout/logprob_abs_diff_mean"] > 1e-4 for s in trained if s >= 2)
    assert rows_d[1]["reward/mean"] == rows_p[1]["reward/mean"]  # the same first batch
    changed = [not torch.equal(a, b) for a, b in zip(decoupled.model.parameters(), plain.model.parameters())]
    assert any(changed)


def test_a_failed_fit_leaves_no_rollout_worker_behind(model_dir: Path, tmp_path: Path) -> None:
    """An error raised in the trainer's own process (here: by its update) ends fit() with that
    error, and the worker process is gone by then: an in-process caller (a notebook, a sweep)
    keeps no orphan that holds a core and the weights."""
    cfg = load_config(
        None, [f"logging.run_dir={tmp_path}", "logging.run_name=fail", *QUIET, *SMALL, *ASYNC,
               f"model.path={model_dir}", "async.max_staleness=1", "train.total_steps=3"],
    )  # fmt: skip
    trainer = Trainer(cfg)
    seen = []

    def broken_update(*args: object, **kwargs: object) -> dict:
        seen.append(trainer.source.proc)  # the worker, running while the trainer updates
        raise RuntimeError("update failed on purpose")

    trainer.update = broken_update  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="update failed on purpose"):
        trainer.fit()
    assert seen and seen[0] is not None and seen[0].pid
    assert not seen[0].is_alive()
