"""How a run's writes become visible: the one place where a local folder and object storage
differ (`rundir.Run` holds one of these and never asks which).

- **Local** (`LocalCommits`): the run folder and every version folder are built under a
  temporary name and appear by one rename; writers hold an flock on `RUN/.lock`; what a
  killed writer left (temporary folders) is removed when the lock is next taken.
- **Object storage** (`RemoteCommits`): nothing can be renamed or locked, so a write
  commits by creating one small object that must not exist yet (S3's conditional PUT):
  `run.json` for the run, `versions/NNNN.json` naming the version's folder for a version
  (`versions/NNNN-<token>/`, a name no other writer picks). Of two writers racing for
  version N one creates the record and the other is told (FileExistsError); a killed
  writer leaves only a folder no record names, which readers never see.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unlearn_cli.errors import RunError
from unlearn_cli.fileio import atomic_write_json, rename, run_lock
from unlearn_cli.location import (
    create_exclusive,
    is_remote,
    listing,
    remove_tree,
    unique_name,
)

VERSION_RE = re.compile(r"^\d{4}$")
COMMIT_RE = re.compile(r"^(\d{4})\.json$")
COMMIT_FORMAT = "unlearn-commit"


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


class Commits(ABC):
    """The commit protocol of the run at `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @abstractmethod
    def create_run(self, meta: dict[str, Any], write_files: Callable[[Path], None]) -> None:
        """Make the run: `write_files(folder)` writes its files, then run.json (`meta`)
        makes it exist; an old run there (the caller checked --force) is replaced."""

    @abstractmethod
    def versions(self) -> list[int]:
        """The committed versions, ascending."""

    @abstractmethod
    def version_dir(self, version: int) -> Path:
        """The folder of a committed version (for one not committed: where it would be)."""

    @abstractmethod
    def staging(self, version: int) -> Path:
        """A folder for a version's files that no reader sees until `commit`."""

    @abstractmethod
    def commit(self, version: int, staging: Path) -> None:
        """Make the staged folder version `version`; FileExistsError if another writer
        committed that version first (the caller removes the staging folder)."""

    @abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a command writes to the run."""

    def publish(self, version: int, write_files: Callable[[Path], None]) -> None:
        """Version `version`, whole or not at all: `write_files(folder)` fills a staging
        folder, which is then committed; on any failure the folder is removed and
        nothing is visible."""
        tmp = self.staging(version)
        try:
            write_files(tmp)
            self.commit(version, tmp)
        except FileExistsError:
            remove_tree(tmp)
            raise RunError(
                f"Another unlearn command committed version {version} of {self.root} while "
                "this one ran; this one wrote nothing.",
                hint="run it again: it starts from the newest version (or name one with --from)",
            ) from None
        except OSError as exc:
            remove_tree(tmp)
            raise RunError(
                f"Could not write version {version} of {self.root}: {exc.strerror or exc}.",
                hint="free disk space (or fix permissions) and run it again; "
                "no version was written",
            ) from exc
        except BaseException:
            remove_tree(tmp)
            raise


class LocalCommits(Commits):
    """A folder on a local filesystem: renames and an flock."""

    def create_run(self, meta: dict[str, Any], write_files: Callable[[Path], None]) -> None:
        path = self.root
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in [
            *path.parent.glob(f".{path.name}.tmp-*"),
            *path.parent.glob(f".{path.name}.old-*"),
        ]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed `train`
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        (tmp / ".lock").touch()  # exists from the start: a failed writer adds nothing
        write_files(tmp)
        atomic_write_json(tmp / "run.json", meta)
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
        if path.is_dir() and any(path.iterdir()):
            rename(path, old)
        elif path.is_dir():
            path.rmdir()
        rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)

    def versions(self) -> list[int]:
        names = [p.name for p in listing(self.versions_dir)]
        return sorted(int(n) for n in names if VERSION_RE.match(n))

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / f"{version:04d}"

    def staging(self, version: int) -> Path:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.versions_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        return tmp

    def commit(self, version: int, staging: Path) -> None:
        rename(staging, self.version_dir(version))  # fails if it appeared meanwhile

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with run_lock(self.root):
            for stale in self.versions_dir.glob(".tmp-*"):  # left by a killed writer
                shutil.rmtree(stale, ignore_errors=True)
            yield


class RemoteCommits(Commits):
    """A prefix on object storage: conditional creates, no lock."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._folders: dict[int, str] = {}  # version -> its folder's name, once read

    def create_run(self, meta: dict[str, Any], write_files: Callable[[Path], None]) -> None:
        """An old run (with --force) is deleted, run.json last, so an interrupted delete
        still reads as a run that --force may replace; the new run's files are written,
        then run.json is created only if no other writer created it first. Until then the
        prefix holds no run."""
        remove_tree(self.root, last="run.json")
        write_files(self.root)
        try:
            create_exclusive(self.root / "run.json", json_bytes(meta))
        except FileExistsError:
            raise RunError(
                f"Another command created a run at {self.root} while this one started.",
                hint="choose another --out, or wait for it and pass --force to replace it",
            ) from None

    def versions(self) -> list[int]:
        names = [p.name for p in listing(self.versions_dir)]
        return sorted(int(m.group(1)) for n in names if (m := COMMIT_RE.match(n)))

    def version_dir(self, version: int) -> Path:
        if version not in self._folders:
            record = self.versions_dir / f"{version:04d}.json"
            try:
                self._folders[version] = str(json.loads(record.read_text())["folder"])
            except FileNotFoundError:
                return self.versions_dir / f"{version:04d}"  # not committed: readers say so
            except (ValueError, KeyError, TypeError) as exc:
                raise RunError(
                    f"Commit record {record} is damaged ({exc}).",
                    hint="restore it from the bucket's object versions or a backup",
                ) from None
        return self.versions_dir / self._folders[version]

    def staging(self, version: int) -> Path:
        return self.versions_dir / unique_name(f"{version:04d}-")

    def commit(self, version: int, staging: Path) -> None:
        record = {"format": COMMIT_FORMAT, "version": version, "folder": staging.name}
        create_exclusive(self.versions_dir / f"{version:04d}.json", json_bytes(record))
        self._folders[version] = staging.name

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        yield  # every commit is a conditional create: of two writers, one wins


def commits_for(root: Path) -> Commits:
    return RemoteCommits(root) if is_remote(root) else LocalCommits(root)
