"""The run directory (DESIGN section 3).

    RUN/
      run.json              config, seed, versions, dataset and model fingerprints, status
      init.safetensors      theta_0
      versions/0000/        the trained model; one folder per applied request after it
          model.safetensors
          receipt.json
      deltas.zarr/          the update store
      ledger.json           forgotten sample ids and subtracted steps

A version folder is built under a temporary name and renamed into place, so it
either exists whole or not at all; no command ever rewrites an existing version.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn_cli.data import Dataset, load_dataset
from unlearn_cli.errors import RunError
from unlearn_cli.fileio import (
    atomic_write_json,
    load_into,
    load_weights,
    read_json,
    save_weights,
)
from unlearn_cli.models import ModelSpec, create_model

RUN_FORMAT = "unlearn-run"
RUN_FORMAT_VERSION = 1
VERSION_RE = re.compile(r"^\d{4}$")


class Run:
    """A run directory on disk. `Run.open` validates; `Run.create` prepares an empty one."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta

    # -- paths ---------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.path / "run.json"

    @property
    def init_path(self) -> Path:
        return self.path / "init.safetensors"

    @property
    def store_path(self) -> Path:
        return self.path / "deltas.zarr"

    @property
    def versions_dir(self) -> Path:
        return self.path / "versions"

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / f"{version:04d}"

    # -- lifecycle -------------------------------------------------------------
    @staticmethod
    def check_target(path: Path, force: bool) -> None:
        """Refuse an --out that holds anything but a run we may replace (checked before work)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunError(f"--out {path} exists and is a file.", hint="choose another --out")
        if path.is_dir() and any(path.iterdir()):
            if not force:
                raise RunError(
                    f"--out {path} already exists and is not empty.",
                    hint="choose a new --out, or pass --force to replace the run there",
                )
            if not (path / "run.json").exists():
                raise RunError(
                    f"--out {path} is not empty and is not an unlearn run; refusing to delete it.",
                    hint="choose a new --out",
                )

    @classmethod
    def create(cls, path: Path, force: bool) -> Run:
        """Prepare an empty `path` for a new run, replacing an old run only with `force`."""
        path = Path(path)
        cls.check_target(path, force)
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, {})

    @classmethod
    def open(cls, path: Path, require_complete: bool = True) -> Run:
        path = Path(path)
        if not path.is_dir():
            raise RunError(
                f"Run directory not found: {path}.",
                hint="train one with `unlearn train --out RUN`",
            )
        meta = read_json(
            path / "run.json",
            "run.json",
            hint=f"{path} is not an unlearn run directory (create one with `unlearn train`)",
        )
        if meta.get("format") != RUN_FORMAT:
            raise RunError(f"{path} is not an unlearn run (run.json has no format '{RUN_FORMAT}').")
        if meta.get("format_version") != RUN_FORMAT_VERSION:
            raise RunError(
                f"{path} has run format version {meta.get('format_version')}; this unlearn "
                f"reads version {RUN_FORMAT_VERSION}.",
                hint="use the unlearn version that wrote it, or retrain",
            )
        run = cls(path, meta)
        if require_complete and meta.get("status") != "complete":
            raise RunError(
                f"Run {path} is incomplete: training stopped before it finished "
                f"({run.describe_incomplete()}).",
                hint="train it again with `unlearn train ... --out RUN --force`",
            )
        return run

    def describe_incomplete(self) -> str:
        from unlearn_cli.store import open_store_if_present

        store = open_store_if_present(self.store_path)
        if store is None:
            return "no update store"
        info = store.info()
        return f"{info.committed_steps} of {info.planned_steps} steps recorded"

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        atomic_write_json(self.meta_path, meta)

    # -- data and models -------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.meta["model"]["spec"])

    def new_model(self) -> nn.Module:
        return create_model(self.meta["config"]["model"], self.spec)

    def load_dataset(self, data_root: Path | None = None, download: bool = False) -> Dataset:
        data = load_dataset(self.meta["config"]["dataset"], data_root, download)
        expected = self.meta["dataset"]["fingerprint"]
        if data.fingerprint != expected:
            raise RunError(
                f"Dataset '{data.name}' does not match the one run {self.path} was trained on "
                f"(fingerprint {data.fingerprint[:12]} != {expected[:12]}).",
                hint="point --data-root at the original files; sample ids are positions in them",
            )
        return data

    def load_state(self, version: int | None = None) -> dict[str, torch.Tensor]:
        path = (
            self.init_path if version is None else self.version_dir(version) / "model.safetensors"
        )
        state = load_weights(path)
        load_into(self.new_model(), state, path)  # validates names and shapes
        return state

    def load_model(self, version: int) -> nn.Module:
        model = self.new_model()
        path = self.version_dir(version) / "model.safetensors"
        load_into(model, load_weights(path), path)
        return model

    # -- writers -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's write lock; a second writer gets a clear error, not a race.

        Temp folders left by a killed writer are removed once the lock is held.
        """
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(
                    f"Another unlearn command is writing to {self.path}.",
                    hint="wait for it to finish, then run this again",
                ) from None
            for stale in self.versions_dir.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            os.close(fd)

    # -- versions -------------------------------------------------------------
    def versions(self) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.versions_dir.iterdir() if VERSION_RE.match(p.name))

    def latest_version(self) -> int:
        versions = self.versions()
        if not versions:
            raise RunError(
                f"Run {self.path} has no model versions.",
                hint="train it again with `unlearn train ... --force`",
            )
        return versions[-1]

    def check_version(self, version: int) -> int:
        if version not in self.versions():
            raise RunError(
                f"Run {self.path} has no version {version}.",
                hint=f"existing versions: {', '.join(map(str, self.versions())) or 'none'}",
            )
        return version

    def write_version(
        self,
        state: dict[str, torch.Tensor],
        receipt: dict[str, Any],
        extra_json: dict[str, Any] | None = None,
        extra_files: dict[str, Callable[[Path], None]] | None = None,
    ) -> int:
        """Write the next version atomically: a temp folder renamed into place.

        `extra_files` maps a name to a writer that creates it inside the folder.
        """
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = (self.versions()[-1] + 1) if self.versions() else 0
        tmp = self.versions_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            receipt = {"version": version, **receipt}
            save_weights(tmp / "model.safetensors", state, {"format": RUN_FORMAT})
            atomic_write_json(tmp / "receipt.json", receipt)
            for name, obj in (extra_json or {}).items():
                atomic_write_json(tmp / name, obj)
            for name, write in (extra_files or {}).items():
                write(tmp / name)
            os.rename(tmp, self.version_dir(version))  # fails if it appeared meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def receipt(self, version: int) -> dict[str, Any]:
        return read_json(
            self.version_dir(version) / "receipt.json",
            f"receipt of version {version}",
            hint="the version folder is damaged",
        )
