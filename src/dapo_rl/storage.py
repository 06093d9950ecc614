"""Writing a run's files so that no crash loses a record, and checking files before trusting them.

- :func:`atomic_write_text` / :func:`atomic_write_lines`: temp file in the same directory, fsync,
  rename over the target, fsync the directory. A SIGKILL at any point leaves either the old file
  or the new one, never a truncated mix.
- :func:`write_manifest` / :func:`verify_manifest`: ``MANIFEST.json`` with the size and sha256 of
  every file of a directory (a checkpoint); a checkpoint whose files do not match is not resumed.
- :func:`check_safetensors`: the header and data extent of every ``*.safetensors`` file of a model
  directory, so a corrupt or truncated file is an error naming the file, not a library traceback.
- :func:`claim_run_dir` / :func:`lock_run_dir`: a run directory is never shared by two runs (an
  exclusive lock for the life of the writing process), ``--overwrite`` removes only what a run
  writes (:data:`RUN_FILES`), and an unwritable directory is found before the model and data load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dapo_rl.errors import ModelFileError, RunDirError, StorageError
from dapo_rl.runlock import LOCK_FILE, lock_run_dir, unlock_run_dir

__all__ = ["LOCK_FILE", "lock_run_dir", "unlock_run_dir"]  # the lock lives in dapo_rl.runlock

MANIFEST_FILE = "MANIFEST.json"
RUN_MARKER = ".dapo_run"
"""Written into a run directory when the run opens it: what marks a directory as a run's."""
RUN_SIGNS = (RUN_MARKER, "metrics.jsonl", "checkpoints")
"""A directory holding any of these is a run directory (a bare ``config.yaml`` does not make one)."""
RUN_FILES = (
    RUN_MARKER, "metrics.jsonl", "config.yaml", "summary.json", "generations.jsonl", "checkpoints",
    "eval", "plots", "tensorboard", "wandb", "wandb_id.txt", "health.jsonl",
)  # fmt: skip
"""Everything a run writes into its directory, by name (plus ``.NAME.tmp`` while one is rewritten):
all that ``--overwrite`` removes. The lock file stays (the new run holds it)."""


# ---- atomic writes -------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` with ``lines`` (each written as given) atomically: the old content stays
    whole until the new one is complete and on disk. A failed write raises :class:`StorageError`
    naming the path and leaves the old file and no temporary behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"could not write {path}: {exc.strerror or exc}; {_storage_hint(exc)}") from exc
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_write_lines`)."""
    atomic_write_lines(path, [text])


def _storage_hint(exc: BaseException) -> str:
    import errno

    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "unexpected pos" in str(exc) or "No space" in str(exc):
        return "the disk is full: free space, then resume the run (dapo train --resume RUN_DIR)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the location is not writable: fix its permissions or choose another logging.run_dir"
    return "check the file system, then resume the run (dapo train --resume RUN_DIR)"


def is_write_error(exc: BaseException) -> bool:
    """An OSError, or what torch.save (``unexpected pos``) and safetensors (``I/O error``) raise
    when a write fails (a full disk, a lost mount)."""
    text = str(exc)
    return isinstance(exc, OSError) or any(
        needle in text for needle in ("unexpected pos", "I/O error", "No space left", "os error", "Errno")
    )


def storage_error(what: str, path: Path, exc: BaseException) -> StorageError:
    """A :class:`StorageError` for a failed write of ``what`` at ``path``, saying what to do."""
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return StorageError(f"could not write {what} {path}: {reason}; {_storage_hint(exc)}")


# ---- manifests -----------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(root: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fsync every file under ``root`` and record its size and sha256 in ``root/MANIFEST.json``."""
    files = {}
    for path in _files(root):
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        files[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {**(extra or {}), "files": files}
    atomic_write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True))
    for sub in {p.parent for p in _files(root)} | {root}:
        fsync_dir(sub)
    return manifest


def verify_manifest(root: Path) -> str | None:
    """None when every file listed in ``root/MANIFEST.json`` is there with its size and sha256;
    otherwise the first problem found, in words."""
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except FileNotFoundError:
        return f"no {MANIFEST_FILE} (its files cannot be checked)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST_FILE} ({exc})"
    for name, want in sorted(files.items()):
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} were written"
        if sha256_file(path) != want["sha256"]:
            return f"{name} does not match its sha256 (corrupted after it was written)"
    return None


# ---- model files ---------------------------------------------------------------------------------
def safetensors_problem(path: Path) -> str | None:
    """None when ``path`` has a readable safetensors header whose tensors lie inside the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"invalid header length {length} for a file of {size} bytes (truncated or not safetensors)"
            header = json.loads(handle.read(length).decode("utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable safetensors header ({exc})"
    if not isinstance(header, dict):
        return "the safetensors header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            return f"tensor {name!r} has no valid data_offsets"
    if 8 + length + end > size:
        return f"the tensors need {8 + length + end} bytes but the file has {size} (truncated)"
    return None


def check_safetensors(model_dir: Path) -> None:
    """Raise :class:`ModelFileError` naming the first ``*.safetensors`` file of ``model_dir`` that is
    corrupt or truncated (only the headers are read: fast for any model size)."""
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ModelFileError(
                f"model file {path} is corrupt: {problem}. Copy the model directory again, or point "
                "model.path at another copy"
            )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
"""A model directory holding none of these has no tokenizer."""


def check_tokenizer_files(model_dir: Path) -> None:
    """Raise :class:`ModelFileError` when ``model_dir`` holds no tokenizer file (transformers would
    instead suggest installing packages)."""
    if not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFileError(
            f"{model_dir} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): copy the tokenizer "
            "files of the model it comes from into it (tokenizer.save_pretrained(path) writes them), or "
            "point model.path at a complete model directory"
        )


# ---- run directories -----------------------------------------------------------------------------
def _is_run_config(path: Path) -> bool:
    """``config.yaml`` as a run writes it: every section of the resolved config and no ``base:``
    (a user's own config file names a few sections or a base preset)."""
    import yaml  # deferred: storage is imported by light modules that never read YAML

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    sections = {"model", "data", "reward", "rollout", "algorithm", "train", "checkpoint", "logging"}
    return isinstance(data, dict) and sections <= data.keys() and "base" not in data


def is_run_dir(path: Path) -> bool:
    """``path`` holds a run: its marker, its metrics or its checkpoints."""
    return any((Path(path) / name).exists() for name in RUN_SIGNS)


def run_dir_in_use(path: Path) -> list[str]:
    """The signs of a run in ``path`` (empty when it is new or holds no run)."""
    return [name for name in RUN_SIGNS if (Path(path) / name).exists()]


def foreign_files(path: Path) -> list[str]:
    """Entries of a directory that holds no run whose names a run would write over."""
    return [name for name in RUN_FILES if (Path(path) / name).exists()]


def refuse_if_in_use(path: Path) -> None:
    """Raise :class:`RunDirError` when ``path`` holds another run, or files that are not a run's
    under names a run writes (those are never offered for deletion)."""
    path = Path(path)
    used = run_dir_in_use(path)
    if used:
        raise RunDirError(
            f"run directory {path} already holds another run ({', '.join(used)}): continue it with "
            f"dapo train --resume {path}, choose another logging.run_name, or pass --overwrite to "
            "delete that run's files (only what a run writes; nothing else in the directory)"
        )
    clash = foreign_files(path)
    if clash:
        raise RunDirError(
            f"{path} is not a run directory but holds {', '.join(clash)}, which a run would write "
            "over: choose another logging.run_name or logging.run_dir (dapo leaves these files alone)"
        )


def _remove_run_files(path: Path) -> list[str]:
    """Remove what a run writes in ``path`` (:data:`RUN_FILES` and their temporaries), by name;
    a ``config.yaml`` that is not a run's is kept. Returns the names removed."""
    removed = []
    for name in RUN_FILES:
        for entry in (path / name, path / f".{name}.tmp"):
            if not (entry.exists() or entry.is_symlink()):
                continue
            if entry.name == "config.yaml" and not _is_run_config(entry):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    return removed


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(
                    f"cannot use {path} as a run directory: {parent} exists and is not a directory; "
                    "choose another logging.run_dir or logging.run_name"
                )
            return parent
    return Path.cwd()


def _probe(directory: Path, path: Path) -> None:
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise RunDirError(
            f"cannot write to the run directory {path}: {exc.strerror or exc} ({directory}); fix its "
            "permissions or choose another logging.run_dir"
        ) from exc


def check_creatable(path: Path) -> None:
    """``path`` can become a run directory: it or its nearest existing parent is a directory this
    process can write in (probed with a temporary file; nothing else is created). Raises
    :class:`RunDirError`."""
    path = Path(path)
    _probe(_nearest_existing(path), path)


def check_writable(path: Path) -> None:
    """Create ``path`` (and parents) and probe that files can be written there, or raise
    :class:`RunDirError`."""
    path = Path(path)
    _nearest_existing(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"cannot write to the run directory {path}: {exc.strerror or exc}; fix its permissions or "
            "choose another logging.run_dir"
        ) from exc
    _probe(path, path)


def claim_run_dir(path: Path, overwrite: bool = False) -> Path:
    """Make ``path`` the directory of a NEW run, locked by this process (:func:`lock_run_dir`):
    refuse one holding another run (unless ``overwrite``, which removes only that run's files,
    :data:`RUN_FILES`) or holding files a run would write over that are not a run's (always).
    Returns ``path``."""
    path = Path(path)
    check_writable(path)
    if not (overwrite and is_run_dir(path)):
        refuse_if_in_use(path)  # before the lock file: a refused directory gets nothing new
    lock_run_dir(path)
    if overwrite and is_run_dir(path):
        removed = _remove_run_files(path)
        print(f"--overwrite: removed the earlier run's {', '.join(removed)} from {path}")
    refuse_if_in_use(path)
    return path


def write_run_marker(path: Path) -> None:
    """Mark ``path`` as a run's directory (once; what :func:`is_run_dir` looks for first)."""
    marker = Path(path) / RUN_MARKER
    if not marker.exists():
        atomic_write_text(marker, json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
