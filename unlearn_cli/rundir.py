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
renamed or locked: a version's files go to `versions/NNNN-<token>/` and a commit
record `versions/NNNN.json` created only if it does not exist yet makes it a version;
journals are folders of one object per line. `commits.py` holds both protocols, and
`Run` never asks which one it has. Readers trust only what is committed, as they
trust only the committed steps of the update store.

Size: about 330 lines. `Run` is the object every command holds; each loader checks what
it loads against run.json (architecture, dataset, model hashes, store fingerprint), and
those checks stay beside the one record they read.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn_cli.commits import commits_for
from unlearn_cli.data import Dataset, absolute_spec, load_dataset
from unlearn_cli.errors import DataNotFoundError, RunError, StoreError
from unlearn_cli.fileio import (
    atomic_write_json,
    check_format,
    check_state,
    read_json,
    save_weights,
    state_hash,
)
from unlearn_cli.ledger import LedgerState, append_journal, journal_entry
from unlearn_cli.lineage import retired_versions
from unlearn_cli.location import (
    is_remote,
    location,
)
from unlearn_cli.models import ModelSpec, architecture_fingerprint, create_model
from unlearn_cli.samples import SampleKeys, require_keys
from unlearn_cli.store import UpdateStore, ZarrUpdateStore
from unlearn_cli.store.covariance import COVARIANCE_NAME, recover
from unlearn_cli.weight_cache import read_weights

RUN_FORMAT = "unlearn-run"
RUN_FORMAT_VERSION = 1
CACHE_ENV = "UNLEARN_CACHE"
RETRAIN_HINT = "train it again with `unlearn train ... --out RUN --force`"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}


class Run:
    """A run directory on disk. `Run.open` validates; `new_run.start_run` makes one."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.remote = is_remote(path)
        self.commits = commits_for(path)  # how its writes become visible (commits.py)
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
        return self.commits.version_dir(version)

    # -- lifecycle -------------------------------------------------------------
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
        state = read_weights(path, expected, self.cache if self.remote else None)
        check_state(self._shapes(), state, path)  # names and shapes
        if expected is not None and state_hash(state) != expected:
            raise RunError(
                f"{path} does not match the hash recorded for it: the file was changed or damaged.",
                hint="restore it from a backup; `unlearn verify RUN` checks the whole run",
            )
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
        return self.commits.versions()

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
        with self.commits.lock():
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
        version = self.next_version()
        state = cpu_state(model)
        after = state_hash(state)
        hashes = {"model_hash": after}
        if hash_before is not None:
            hashes |= {"model_hash_before": hash_before, "model_hash_after": after}
        receipt = {"version": version, "created": now(), **receipt, **hashes}

        def write_files(folder: Path) -> None:
            save_weights(folder / "model.safetensors", state, {"format": RUN_FORMAT})
            atomic_write_json(folder / "receipt.json", receipt)
            if ledger is not None:
                atomic_write_json(folder / "ledger.json", ledger.to_dict())
            for name, write in (files or {}).items():
                write(folder / name)

        self.commits.publish(version, write_files)
        if version > 0:
            append_journal(self.path, journal_entry(version, receipt))
        return receipt


def model_hash(receipt: dict[str, Any]) -> str | None:
    """The hash a receipt recorded for its version's model (None in very old receipts)."""
    return receipt.get("model_hash") or receipt.get("model_hash_after")
