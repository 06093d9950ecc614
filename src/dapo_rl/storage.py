"""Writing a run's files so that no crash loses a record, and checking files before trusting them.

- :func:`atomic_write_text` / :func:`atomic_write_lines`: temp file in the same directory, fsync,
  rename over the target, fsync the directory. A SIGKILL at any point leaves either the old file
  or the new one, never a truncated mix.
- :func:`write_manifest` / :func:`verify_manifest`: ``MANIFEST.json`` with the size and sha256 of
  every file of a directory (a checkpoint); a checkpoint whose files do not match is not resumed.
- :func:`check_safetensors`: the header and data extent of every ``*.safetensors`` file of a model
  directory, so a corrupt or truncated file is an error naming the file, not a library traceback.
- :func:`claim_run_dir`: a run directory is never shared by two runs, and an unwritable one is
  found before the model and data load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dapo_rl.errors import ModelFileError, RunDirError, StorageError

MANIFEST_FILE = "MANIFEST.json"
RUN_FILES = ("metrics.jsonl", "config.yaml", "summary.json", "checkpoints")
"""A directory holding any of these belongs to a run."""


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
    except FileNotFoundError:
        return f"no {MANIFEST_FILE}"
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


# ---- run directories -----------------------------------------------------------------------------
def run_dir_in_use(path: Path) -> list[str]:
    """The run files already in ``path`` (empty when the directory is new or holds none)."""
    return [name for name in RUN_FILES if (Path(path) / name).exists()]


def refuse_if_in_use(path: Path) -> None:
    """Raise :class:`RunDirError` when ``path`` holds another run's files."""
    used = run_dir_in_use(path)
    if used:
        raise RunDirError(
            f"run directory {path} already holds another run ({', '.join(used)}): continue it with "
            f"dapo train --resume {path}, choose another logging.run_name, or pass --overwrite to "
            "delete it"
        )


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
    """Make ``path`` the directory of a NEW run: refuse one holding another run's files (unless
    ``overwrite``, which deletes everything in it), and check that it can be written. Returns
    ``path``."""
    path = Path(path)
    used = run_dir_in_use(path)
    if not overwrite:
        refuse_if_in_use(path)
    if used:  # --overwrite: the earlier run's files all go (metrics, checkpoints, plots, ...)
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    check_writable(path)
    return path
