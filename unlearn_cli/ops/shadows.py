"""`unlearn shadows RUN -k K` (and `train --shadows K`): the shadow models the per-example
evidence needs, built once per run and reused by every later request and eval.

Each shadow trains with the run's config on a random half of the pool (the training split,
then the test split), in pairs that split it in halves, so every sample has K/2 shadows
with it and K/2 without (`shadows.py`). Pairs already there are reused; a kill loses at
most the pair in training; a run trained again (another config, data or architecture)
gets new ones. The cost is K trainings on half as many samples as the run's; it is stated
against the run's own training time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from unlearn_cli.data import Dataset
from unlearn_cli.progress import Progress
from unlearn_cli.rundir import Run
from unlearn_cli.shadows import FOLDER, check_count, ensure_shadows

DEFAULT_SHADOWS = 8


def build_shadows(
    run_path: Path,
    k: int,
    *,
    data_root: Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train the run's missing shadows up to `k`; returns what `--json` prints."""
    check_count(k)
    run = Run.open(run_path)
    return shadows_summary(run, run.load_dataset(data_root, download), k, progress, "shadows")


def shadows_summary(
    run: Run, data: Dataset, k: int, progress: Progress | None, what: str
) -> dict[str, Any]:
    """Ensure `k` shadows of `run` and describe them (for `shadows` and `train --shadows`)."""
    start = time.perf_counter()
    fitted = ensure_shadows(run, data, k, progress, what)
    train_seconds = float((run.meta.get("train") or {}).get("train_seconds") or 0) or None
    return {
        "run": str(run.path),
        "path": str(run.path / FOLDER),
        "shadows": k,
        "trained_now": fitted.trained,
        "reused": k - fitted.trained,
        "pool": int(fitted.phi.shape[1]),
        "seconds": round(time.perf_counter() - start, 3),
        "shadow_train_seconds": round(fitted.seconds, 3),
        "run_train_seconds": train_seconds,
        "cost_vs_training": round(fitted.seconds / train_seconds, 3) if train_seconds else None,
    }
