"""The run directory: the one place that knows its layout and how it changes.

    RUN/
      run.json              format, status, config, seed, dataset and model fingerprints
      init.safetensors      theta_0
      versions/0000/        the trained model; one folder per later version
          model.safetensors
          receipt.json      what produced it, its model hash, timings
          ledger.json       forgotten ids and subtracted steps along its lineage (not 0000)
          masks.safetensors, covariance.zarr   (pruned and pgu versions)
      deltas.zarr/          the update store (`store/zarr_store.py`)
      covariance.zarr/      layer-input covariances for pgu (optional)
      ledger.jsonl          the journal: one line per version after 0000
      .lock                 held while a command writes

Every version is written by `write_version`: a temporary folder renamed into
place, so it exists whole or not at all, then one journal line. No command ever
rewrites an existing version. A version's model is checked against the hash in
its receipt whenever it is loaded.

On object storage (`RUN` a URL such as s3://bucket/runs/mnist) nothing can be
renamed or locked, so a write commits by creating one small object that must not
exist yet (S3's conditional PUT, If-None-Match: *):

      run.json                  created last by `train`: the run exists once it does
      versions/0001-<token>/    a version's files, under a name no other writer picks
      versions/0001.json        the commit record: {"version": 1, "folder": "0001-<token>"}
      ledger.jsonl.d/, retired.jsonl.d/   journals, one object per line

Of two writers racing for version N, one creates `versions/NNNN.json` and the
other is told and removes its folder; a killed writer leaves only a folder no
commit record names. Readers trust only what a commit record references, as they
trust only the committed steps of the update store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn_cli.data import Dataset, absolute_spec, load_dataset
from unlearn_cli.errors import DataNotFoundError, RunError, StoreError
from unlearn_cli.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    check_format,
    check_state,
    load_weights,
    load_weights_bytes,
    read_json,
    rename,
    run_lock,
    save_weights,
    state_hash,
)
from unlearn_cli.ledger import LedgerState, append_journal, journal_entry
from unlearn_cli.lineage import retired_versions
from unlearn_cli.location import (
    create_exclusive,
    is_remote,
    listing,
    location,
    remove_tree,
    unique_name,
)
from unlearn_cli.models import ModelSpec, architecture_fingerprint, create_model
from unlearn_cli.samples import SampleKeys, require_keys
from unlearn_cli.store import UpdateStore, ZarrUpdateStore
from unlearn_cli.store.covariance import COVARIANCE_NAME, recover

RUN_FORMAT = "unlearn-run"
RUN_FORMAT_VERSION = 1
VERSION_RE = re.compile(r"^\d{4}$")
COMMIT_RE = re.compile(r"^(\d{4})\.json$")
COMMIT_FORMAT = "unlearn-commit"
CACHE_ENV = "UNLEARN_CACHE"
RETRAIN_HINT = "train it again with `unlearn train ... --out RUN --force`"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}


class Run:
    """A run directory on disk. `Run.open` validates; `Run.create` prepares an empty one."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.remote = is_remote(path)
        self._commits: dict[int, str] = {}  # remote: version -> its folder's name
        # Where models fetched from object storage are kept, by content hash (eval --cache).
        cache = os.environ.get(CACHE_ENV)
        self.cache: Path | None = Path(cache) if cache else None
        self._state_shapes: dict[str, tuple[int, ...]] | None = None  # see _shapes()

    # -- paths ---------------------------------------------------------------
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
        """The folder of a version: `versions/NNNN`, or on object storage the folder
        its commit record names."""
        if not self.remote:
            return self.versions_dir / f"{version:04d}"
        if version not in self._commits:
            record = self.versions_dir / f"{version:04d}.json"
            try:
                self._commits[version] = str(json.loads(record.read_text())["folder"])
            except FileNotFoundError:
                return self.versions_dir / f"{version:04d}"  # not committed: readers say so
            except (ValueError, KeyError, TypeError) as exc:
                raise RunError(
                    f"Commit record {record} is damaged ({exc}).",
                    hint="restore it from the bucket's object versions or a backup",
                ) from None
        return self.versions_dir / self._commits[version]

    # -- lifecycle -------------------------------------------------------------
    @staticmethod
    def check_target(path: Path, force: bool) -> None:
        """Refuse an --out that holds anything but a run we may replace (checked before work)."""
        path = location(path)
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
    def create(
        cls,
        path: Path,
        force: bool,
        meta: dict[str, Any],
        init_state: dict[str, torch.Tensor],
        extra: Callable[[Path], None] | None = None,
    ) -> Run:
        """A new run at `path` holding θ0, run.json and its lock file (and what `extra`
        writes into the folder), replacing an old run only with `force`. The folder appears
        by one rename, so a kill leaves either no run or a whole one; an old run is moved
        aside (one rename) before it is deleted."""
        path = location(path)
        cls.check_target(path, force)
        if is_remote(path):
            return cls._create_remote(path, meta, init_state, extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in [
            *path.parent.glob(f".{path.name}.tmp-*"),
            *path.parent.glob(f".{path.name}.old-*"),
        ]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed `train`
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        (tmp / ".lock").touch()  # exists from the start: a failed writer adds nothing
        save_weights(tmp / "init.safetensors", init_state, {"format": RUN_FORMAT})
        atomic_write_json(tmp / "run.json", meta)
        if extra is not None:
            extra(tmp)
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
        if path.is_dir() and any(path.iterdir()):
            rename(path, old)
        elif path.is_dir():
            path.rmdir()
        rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return cls(path, meta)

    @classmethod
    def _create_remote(
        cls,
        path: Path,
        meta: dict[str, Any],
        init_state: dict[str, torch.Tensor],
        extra: Callable[[Path], None] | None,
    ) -> Run:
        """On object storage: an old run (with `force`) is deleted, run.json last, so an
        interrupted delete still reads as a run that --force may replace; the new run's
        files are written, then run.json is created only if no other writer created it
        first. Until then the prefix holds no run."""
        remove_tree(path, last="run.json")
        save_weights(path / "init.safetensors", init_state, {"format": RUN_FORMAT})
        if extra is not None:
            extra(path)
        try:
            create_exclusive(path / "run.json", _json_bytes(meta))
        except FileExistsError:
            raise RunError(
                f"Another command created a run at {path} while this one started.",
                hint="choose another --out, or wait for it and pass --force to replace it",
            ) from None
        return cls(path, meta)

    @classmethod
    def open(cls, path: Path, require_complete: bool = True) -> Run:
        path = location(path)
        if not path.is_dir():
            raise RunError(
                f"Run directory not found: {path}.",
                hint="train one with `unlearn train --out RUN`",
            )
        hint = f"{path} is not an unlearn run directory (create one with `unlearn train`)"
        meta = read_json(path / "run.json", "run.json", hint=hint)
        check_format(meta, RUN_FORMAT, (RUN_FORMAT_VERSION,), path, RunError, hint=RETRAIN_HINT)
        run = cls(path, meta)
        if require_complete and meta.get("status") != "complete":
            raise RunError(
                f"Run {path} is incomplete: training stopped before it finished "
                f"({run.describe_incomplete()}).",
                hint=RETRAIN_HINT,
            )
        return run

    def describe_incomplete(self) -> str:
        try:
            store = self.store(require_complete=False)
        except StoreError:
            return "its update store was never started"
        if store is None:
            return "no update store"
        info = store.info()
        return f"{info.committed_steps} of {info.planned_steps} steps recorded"

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        atomic_write_json(self.path / "run.json", meta)

    # -- data, models and the store ----------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.meta["model"]["spec"])

    @property
    def n_train(self) -> int:
        return int(self.meta["dataset"]["n_train"])

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """The architecture's tensor names and shapes, from one model built once per Run."""
        if self._state_shapes is None:
            model = self.new_model()
            self._state_shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
        return self._state_shapes

    def new_model(self) -> nn.Module:
        """A fresh model of the run's architecture; refused if the code now builds another."""
        name = self.meta["config"]["model"]
        model = create_model(name, self.spec)
        expected = self.meta["model"].get("architecture")
        if expected and architecture_fingerprint(model) != expected:
            raise RunError(
                f"Model '{name}' now builds another architecture than run {self.path} was "
                f"trained with (fingerprint {architecture_fingerprint(model)[:12]} != "
                f"{expected[:12]}).",
                hint="restore the model code the run was trained with; a changed architecture "
                "cannot take the run's weights or updates",
            )
        return model

    def load_dataset(self, data_root: Path | None = None, download: bool = False) -> Dataset:
        config = self.meta["config"]
        if config.get("dataset") is None:
            raise DataNotFoundError(
                f"Run {self.path} was recorded from a custom training loop without a dataset "
                "spec, so its training data cannot be reloaded.",
                hint="use a method that needs only the update store (amnesiac, "
                "partial-amnesiac; auto picks one), or record with dataset=...",
            )
        spec = config["dataset"]
        recorded = self.meta["dataset"].get("name", "")
        if spec != absolute_spec(spec) and recorded.partition(":")[0] == spec.partition(":")[0]:
            spec = recorded  # an older run kept the relative path; the resolved one is here
        data = load_dataset(spec, data_root, download, config.get("image_size"))
        expected = self.meta["dataset"]["fingerprint"]
        if data.fingerprint != expected:
            raise RunError(
                f"Dataset '{data.name}' does not match the one run {self.path} was trained on "
                f"(fingerprint {data.fingerprint[:12]} != {expected[:12]}).",
                hint="point --data-root at the original files; sample ids are positions in them",
            )
        return data

    def samples(self) -> SampleKeys | None:
        """Keyed hashes of the training samples' keys and subjects (None: ids only)."""
        return SampleKeys.open(self.path)

    def sample_keys(self) -> SampleKeys:
        """The sample keys, or a refusal naming why keys and subjects cannot be used."""
        return require_keys(self.samples(), self.path)

    def load_state(self, version: int | None = None) -> dict[str, torch.Tensor]:
        """θ0 (`version` None) or a version's weights, checked against the architecture
        and, for a version, against the model hash its receipt recorded."""
        if version is None:
            path = self.init_path
            expected = self.meta["model"]["init_hash"]
        else:
            path = self.version_dir(version) / "model.safetensors"
            expected = model_hash(self.receipt(version))
        state = self._read_weights(path, expected)
        check_state(self._shapes(), state, path)  # names and shapes
        if expected is not None and state_hash(state) != expected:
            raise RunError(
                f"{path} does not match the hash recorded for it: the file was changed or damaged.",
                hint="restore it from a backup; `unlearn verify RUN` checks the whole run",
            )
        return state

    def _read_weights(self, path: Path, expected: str | None) -> dict[str, torch.Tensor]:
        """The weights at `path`; a remote file is kept in `self.cache` under its content
        hash, so a later command reads it from there (a cached copy whose hash differs is
        fetched again)."""
        if not (self.remote and self.cache and expected):
            return load_weights(path)
        cached = self.cache / f"{expected}.safetensors"
        if cached.is_file():
            with contextlib.suppress(RunError):
                state = load_weights(cached)
                if state_hash(state) == expected:
                    return state
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return load_weights(path)  # the one "checkpoint not found" error
        state = load_weights_bytes(data, path)
        if state_hash(state) == expected:
            with contextlib.suppress(OSError):  # a cache that cannot be written is skipped
                atomic_write_bytes(cached, data)
        return state

    def load_model(self, version: int) -> nn.Module:
        model = self.new_model()
        model.load_state_dict(self.load_state(version), strict=True)
        return model

    def store(self, require_complete: bool = True) -> UpdateStore | None:
        """The run's update store, checked to belong to its model; None if not recorded."""
        if not (self.store_path / "zarr.json").exists():
            return None
        store = ZarrUpdateStore.open(self.store_path)
        info = store.info()
        expected = self.meta.get("model", {}).get("fingerprint")
        if expected and info.model_fingerprint != expected:
            raise StoreError(
                f"The update store in {self.path} belongs to another model (fingerprint "
                f"{info.model_fingerprint[:12]} != {expected[:12]} in run.json).",
                hint="the store was copied from another run; train this run again",
            )
        if require_complete and not info.complete:
            raise StoreError(
                f"The update store in {self.path} is incomplete ({info.committed_steps} of "
                f"{info.planned_steps} steps).",
                hint=RETRAIN_HINT,
            )
        return store

    # -- versions -------------------------------------------------------------
    def versions(self) -> list[int]:
        names = [p.name for p in listing(self.versions_dir)]
        if self.remote:
            return sorted(int(m.group(1)) for n in names if (m := COMMIT_RE.match(n)))
        return sorted(int(n) for n in names if VERSION_RE.match(n))

    def next_version(self) -> int:
        """The number the next `write_version` takes (stable while the lock is held)."""
        existing = self.versions()
        return existing[-1] + 1 if existing else 0

    def resolve_version(self, version: int | None) -> int:
        """`version` if the run has it; the newest live (not retired) one when None."""
        versions = self.versions()
        if version is None:
            live = sorted(set(versions) - retired_versions(self))
            if not live:
                raise RunError(f"Run {self.path} has no live model versions.", hint=RETRAIN_HINT)
            return live[-1]
        if version not in versions:
            raise RunError(
                f"Run {self.path} has no version {version}.",
                hint=f"existing versions: {', '.join(map(str, versions)) or 'none'}",
            )
        return version

    def receipt(self, version: int) -> dict[str, Any]:
        return read_json(
            self.version_dir(version) / "receipt.json",
            f"receipt of version {version}",
            hint="the version folder is damaged",
        )

    # -- writers -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's write lock (flock on `RUN/.lock`): a second writer gets a clear
        error, not a race. What a killed writer left is cleaned up once it is held."""
        with run_lock(self.path):
            if not self.remote:
                for stale in self.versions_dir.glob(".tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                recover(self.path / COVARIANCE_NAME)
            yield

    def write_version(
        self,
        model: nn.Module,
        receipt: dict[str, Any],
        *,
        ledger: LedgerState | None = None,
        hash_before: str | None = None,
        files: dict[str, Callable[[Path], None]] | None = None,
    ) -> dict[str, Any]:
        """Commit the next version and return its full receipt.

        Stamps the version number and time, hashes the model (and records
        `hash_before`, the input's), writes model, receipt, ledger and `files`
        (name -> writer of that path) in a temporary folder, renames it into
        place, then appends the journal line (versions after 0000).
        """
        if not self.remote:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = self.next_version()
        state = cpu_state(model)
        after = state_hash(state)
        hashes = {"model_hash": after}
        if hash_before is not None:
            hashes |= {"model_hash_before": hash_before, "model_hash_after": after}
        receipt = {"version": version, "created": now(), **receipt, **hashes}
        if self.remote:
            tmp = self.versions_dir / unique_name(f"{version:04d}-")
        else:
            tmp = self.versions_dir / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
        try:
            save_weights(tmp / "model.safetensors", state, {"format": RUN_FORMAT})
            atomic_write_json(tmp / "receipt.json", receipt)
            if ledger is not None:
                atomic_write_json(tmp / "ledger.json", ledger.to_dict())
            for name, write in (files or {}).items():
                write(tmp / name)
            if self.remote:
                self._commit_remote(version, tmp)
            else:
                rename(tmp, self.version_dir(version))  # fails if it appeared meanwhile
        except FileExistsError:
            remove_tree(tmp)
            raise RunError(
                f"Another unlearn command committed version {version} of {self.path} while "
                "this one ran; this one wrote nothing.",
                hint="run it again: it starts from the newest version (or name one with --from)",
            ) from None
        except OSError as exc:
            remove_tree(tmp)
            raise RunError(
                f"Could not write version {version} of {self.path}: {exc.strerror or exc}.",
                hint="free disk space (or fix permissions) and run it again; "
                "no version was written",
            ) from exc
        except BaseException:
            remove_tree(tmp)
            raise
        if version > 0:
            append_journal(self.path, journal_entry(version, receipt))
        return receipt

    def _commit_remote(self, version: int, folder: Path) -> None:
        """Create `versions/NNNN.json` naming `folder`, if no writer did first
        (FileExistsError otherwise)."""
        record = {"format": COMMIT_FORMAT, "version": version, "folder": folder.name}
        create_exclusive(self.versions_dir / f"{version:04d}.json", _json_bytes(record))
        self._commits[version] = folder.name


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def model_hash(receipt: dict[str, Any]) -> str | None:
    """The hash a receipt recorded for its version's model (None in very old receipts)."""
    return receipt.get("model_hash") or receipt.get("model_hash_after")
