"""Atomic writes, safetensors checkpoints and content hashes.

Every file is written to a temporary sibling, flushed, fsynced and renamed, so
a reader sees either the old file or the new one, never half of one. On object
storage (a URL path, `location.py`) a file is one object written by one PUT, which
is whole or absent by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file
from torch import nn

from unlearn_cli.errors import RunError, UnlearnError
from unlearn_cli.location import is_remote, listing, put_bytes, put_file, unique_name

try:  # POSIX; where it is missing, writing commands say so rather than race
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable: fsync the folder itself (a no-op where the
    platform cannot open folders, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself stands
    finally:
        os.close(fd)


def rename(src: Path, dst: Path) -> None:
    """os.rename, then fsync of the destination folder: whole and durable, or not at all."""
    os.rename(src, dst)
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """An exclusive, non-blocking flock on `folder/.lock`, released when the block ends
    (also when the process dies, so a killed writer never leaves a stale lock).

    Object storage has no lock: there, every commit is a conditional write of a new
    object (`Run.write_version`), so of two writers one wins and the other is told."""
    if is_remote(folder):
        yield
        return
    if fcntl is None:
        raise RunError(
            "This platform has no flock, which unlearn needs to keep two writers from "
            "changing one run at once.",
            hint="run writing commands (train, forget, prune, covariance) on Linux or macOS",
        )
    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # read-only storage, permissions
        raise RunError(
            f"Run {folder} cannot be written here ({exc.strerror}), so this command, "
            "which adds to it, cannot run.",
            hint="copy the run somewhere writable, or fix its permissions; "
            "eval and storage-report only read",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"Another unlearn command is writing to {folder}.",
                hint="wait for it to finish, then run this again",
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write; on success it is fsynced and renamed over
    `path` (and the folder fsynced), on failure removed: readers see old or new, never half.
    For a URL the temporary file is local and is uploaded as one object."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="unlearn-") as folder:
            local = Path(folder) / path.name
            yield local
            put_file(local, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    if is_remote(path):
        put_bytes(path, data)
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str, hint: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{what} not found: {path}.", hint=hint) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{what} is not valid JSON: {path} ({exc}).", hint=hint) from None


def append_line(path: Path, obj: Any) -> None:
    """Append one JSON line to a journal (`NAME.jsonl`), durably; a journal is never
    rewritten. Object storage cannot append: there each line is its own object under
    `NAME.jsonl.d/`, named by time and a random token, so concurrent writers never lose one."""
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    if is_remote(path):
        put_bytes(path.parent / f"{path.name}.d" / f"{unique_name()}.json", line.encode())
        return
    torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if torn:  # a kill cut the last line short: end it so it cannot swallow this one
            f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)


def read_lines(path: Path) -> list[str] | None:
    """The lines of a journal written by `append_line` (None if it has none yet)."""
    if is_remote(path):
        folder = path.parent / f"{path.name}.d"
        entries = sorted(listing(folder), key=lambda p: p.name)
        return [p.read_text(encoding="utf-8").strip() for p in entries] or None
    if not path.exists():
        return None
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def check_format(
    meta: Any,
    fmt: str,
    readable: tuple[int, ...],
    where: object,
    error: type[UnlearnError],
    hint: str,
) -> None:
    """The one format check every loader makes: a `format` name and a readable
    `format_version`; `hint` says how to re-create the thing."""
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != fmt:
        raise error(f"{where} is not an {fmt} file (format {found!r}).", hint=hint)
    version = meta.get("format_version")
    if version not in readable:
        raise error(
            f"{where} has {fmt} format version {version!r}; this unlearn reads version "
            + " or ".join(filter(None, [", ".join(map(str, readable[:-1])), str(readable[-1])]))
            + ".",
            hint="use the unlearn version that wrote it, or " + hint,
        )


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a state dict as safetensors, atomically (never pickle)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if is_remote(path):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RunError(
                f"Checkpoint not found: {path}.", hint="the run directory is incomplete"
            ) from None
        return load_weights_bytes(data, path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(
            f"Checkpoint not found: {path}.", hint="the run directory is incomplete"
        ) from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(
            f"Checkpoint is corrupt: {path} ({exc}).",
            hint="restore it from a backup, or re-create the version",
        ) from None


def load_weights_bytes(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Weights from the bytes of a safetensors file read from `path`."""
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(
            f"Checkpoint is corrupt: {path} ({exc}).",
            hint="restore it from a backup, or re-create the version",
        ) from None


def weights_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, from its header alone (8 bytes of length,
    then JSON), read the same way from a local file or an object."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return dict(header.get("__metadata__") or {})


def load_into(
    model: nn.Module, state: dict[str, torch.Tensor], source: Path, partial: bool = False
) -> list[str]:
    """Strict load that names the first mismatched tensor. With `partial`, model tensors
    the checkpoint lacks keep their values; returns their names."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = check_state(expected, state, source, partial)
    model.load_state_dict(state, strict=not partial)
    return missing


def check_state(
    expected: dict[str, tuple[int, ...]],
    state: dict[str, torch.Tensor],
    source: Path,
    partial: bool = False,
) -> list[str]:
    """Check a checkpoint's tensor names and shapes against a model's (`expected`: name ->
    shape) and name the first mismatch; returns the names the checkpoint lacks (allowed
    only with `partial`)."""
    for name, shape in expected.items():
        if name not in state and not partial:
            raise RunError(
                f"Checkpoint {source} lacks tensor '{name}' that the model needs.",
                hint="the checkpoint belongs to a different architecture",
            )
        if name in state and tuple(state[name].shape) != shape:
            raise RunError(
                f"Tensor '{name}' in {source} has shape {tuple(state[name].shape)}, "
                f"the model expects {shape}.",
                hint="the checkpoint belongs to a different architecture; drop tensors whose "
                "shape differs (e.g. an old classification head) from a file given to --init",
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise RunError(
            f"Checkpoint {source} has tensor '{extra[0]}' the model does not know.",
            hint="the checkpoint belongs to a different architecture",
        )
    return sorted(set(expected) - set(state))


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
