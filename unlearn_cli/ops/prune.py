"""`unlearn prune`: iterative magnitude pruning of a version into a sparse version."""

from __future__ import annotations

import time
from pathlib import Path

from unlearn_cli.errors import RunError
from unlearn_cli.fileio import state_hash
from unlearn_cli.ledger import ledger_state, retained_ids
from unlearn_cli.ops.pruned import PrunedState, pruned_state
from unlearn_cli.params import validate_dataclass
from unlearn_cli.predict import accuracy
from unlearn_cli.progress import Progress
from unlearn_cli.pruning import PruneSchedule, iterative_prune, sparsity
from unlearn_cli.rundir import Run
from unlearn_cli.store.masks import MASKS_NAME
from unlearn_cli.train_config import TrainConfig, class_weights


def prune_run(
    run_path: Path,
    schedule: PruneSchedule,
    *,
    from_version: int | None = None,
    seed: int | None = None,
    data_root: Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Prune a dense version by `schedule` and write the next version with its masks."""
    validate_dataclass("prune", schedule)
    run = Run.open(run_path)
    version = run.resolve_version(from_version)
    already = pruned_state(run, version)
    if already is not None:
        raise RunError(
            f"Version {version} is already pruned (sparsity {already.schedule.sparsity:g}).",
            hint=f"prune a dense version instead, e.g. --from {already.dense_version}",
        )
    data = run.load_dataset(data_root, download)
    config = TrainConfig(**run.meta["config"])
    seed = config.seed if seed is None else seed
    ledger = ledger_state(run.version_dir(version))
    model = run.load_model(version)
    with run.lock():
        before = state_hash(model.state_dict())
        start = time.perf_counter()
        retained = retained_ids(data.n_train, ledger.forgotten_ids)
        masks, history = iterative_prune(
            model,
            data.x_train,
            data.y_train,
            retained,
            config,
            schedule,
            seed,
            progress,
            class_weights(config, data.y_train, data.num_classes),
        )
        seconds = time.perf_counter() - start
        receipt = {
            "kind": "prune",
            "parent": version,
            "method": "prune",
            "params": schedule.to_dict(),
            "seed": seed,
            "ids": {"requested": 0, "newly_forgotten": [], "already_forgotten": []},
            "steps": {"subtracted": []},
            "rounds": history,
            "sparsity": sparsity(masks),
            "test_accuracy": accuracy(model, data.x_test, data.y_test),
            "wall_seconds": round(seconds, 4),
        }
        written = run.write_version(
            model,
            receipt,
            ledger=ledger.kept_by(version),
            hash_before=before,
            files={MASKS_NAME: PrunedState(masks, schedule, version).writer(masks)},
        )
    return written
