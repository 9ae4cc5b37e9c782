"""Where a run lives: a local folder, or a URL on object storage (`s3://bucket/prefix/run`,
`memory://...`, any fsspec protocol).

A URL becomes a `UPath` (universal_pathlib): the same path API as `pathlib` over an fsspec
filesystem, so the run's code reads and lists files one way. Credentials and endpoints
come from the filesystem library's own configuration (for S3: the AWS environment
variables and profiles, `AWS_ENDPOINT_URL` for S3-compatible servers); nothing here
handles them. `file://` URLs are local folders, with the local guarantees.

Object stores have no rename and no flock, so what differs is how a write commits
(`rundir.py`): here are the few primitives that differ by kind, and one zarr store
factory that every Zarr array of the project opens through.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, cast

from unlearn_cli.errors import RunError

REMOTE_HINT = "install the object-storage extra: pip install 'unlearn-cli[s3]'"


def location(text: str | os.PathLike[str]) -> Path:
    """A local `Path` for a path or a file:// URL; a `UPath` (typed as Path: it has the
    same API) for any other URL."""
    if isinstance(text, Path) or is_remote(text):
        return cast(Path, text)
    s = os.fspath(text)
    scheme, sep, rest = s.partition("://")
    if not sep or len(scheme) < 2:  # plain paths, and Windows drive letters
        return Path(s)
    if scheme == "file":
        return Path(rest)
    try:
        from upath import UPath

        path = UPath(s)
        path.fs  # noqa: B018  (builds the filesystem now: an unknown protocol fails here)
    except ImportError as exc:
        raise RunError(
            f"{s} is on {scheme}://, which needs a library that is not installed ({exc.name}).",
            hint=REMOTE_HINT,
        ) from None
    except ValueError as exc:
        raise RunError(
            f"{s}: {exc}.", hint="use a local path or an fsspec URL such as s3://bucket/run"
        ) from None
    return cast(Path, path)


def is_remote(path: object) -> bool:
    """Whether `path` is a URL path (a UPath that is not a local pathlib path)."""
    return hasattr(path, "fs") and not isinstance(path, Path)


def _fs_path(path: Path) -> tuple[Any, str]:
    p: Any = path
    return p.fs, p.path


def create_exclusive(path: Path, data: bytes) -> None:
    """Write the object `path` only if it does not exist (S3's If-None-Match: *); raises
    FileExistsError when another writer created it first. The commit primitive of remote
    runs: of two writers, exactly one wins (local runs commit by rename instead)."""
    fs, key = _fs_path(path)
    fs.pipe_file(key, data, mode="create")


def put_bytes(path: Path, data: bytes) -> None:
    """One object written whole (a single PUT is atomic on object stores)."""
    fs, key = _fs_path(path)
    fs.pipe_file(key, data)


def put_file(local: Path, path: Path) -> None:
    fs, key = _fs_path(path)
    fs.put_file(str(local), key)


def remove_tree(path: Path, last: str | None = None) -> None:
    """Delete a folder (or prefix) and everything under it; missing is fine. On object
    storage the file named `last` goes after the rest, so an interrupted delete still
    holds it."""
    if not is_remote(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs, key = _fs_path(path)
    root = key.rstrip("/")
    names = list(file_sizes(path))
    first = [f"{root}/{n}" for n in names if n != last]
    if first:
        fs.rm(first)
    if last in names:
        fs.rm(f"{root}/{last}")


def file_sizes(path: Path) -> dict[str, int]:
    """Every file under `path` by its path relative to it, with its size in bytes."""
    if not is_remote(path):
        return {
            p.relative_to(path).as_posix(): p.stat().st_size
            for p in Path(path).rglob("*")
            if p.is_file()
        }
    fs, key = _fs_path(path)
    fs.invalidate_cache(key)
    found = fs.find(key, detail=True)
    prefix = key.rstrip("/") + "/"
    return {
        name[len(prefix) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if name.startswith(prefix) and info.get("type") != "directory"
    }


def listing(path: Path) -> list[Path]:
    """The entries of a folder as they are now: on object storage the filesystem's cached
    listing is dropped first, so another writer's commit is never missed. A missing folder
    has no entries."""
    if is_remote(path):
        fs, key = _fs_path(path)
        fs.invalidate_cache(key)
    try:
        return list(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def unique_name(prefix: str = "") -> str:
    """A name no other writer picks: time (sortable) and a random token."""
    return f"{prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def zarr_store(path: Path, read_only: bool = False) -> Any:
    """What `zarr.open_group(store=...)` takes for `path`: the folder itself locally (zarr's
    LocalStore), zarr's FsspecStore (concurrent async reads) for a URL."""
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    fs, key = _fs_path(path)
    options = dict(getattr(fs, "storage_options", {}) or {})
    return FsspecStore.from_url(str(path), storage_options=options, read_only=read_only)
