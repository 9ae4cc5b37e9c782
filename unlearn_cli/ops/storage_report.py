"""`unlearn storage-report`: what the update records cost.

Everything it knows of the store comes from the store interface's `accounting()`:
exact bytes per part and the object count, and each layer's bytes (estimated for the
Zarr store, whose rows mix layers: `store/accounting.py`, `bytes_estimated: true`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from unlearn_cli.errors import StoreError
from unlearn_cli.rundir import Run
from unlearn_cli.store import StoreLayout
from unlearn_cli.store.base import StoreAccounting, numpy_value_dtype
from unlearn_cli.store.covariance import COVARIANCE_NAME, disk_bytes

VALUE_BITS = {"float16": 16, "bfloat16": 16, "float32": 32}


@dataclass(frozen=True)
class LayerCost:
    name: str
    params: int
    kept_per_step: int
    keep: float
    index_bytes: int
    value_bytes: int
    bits_per_entry: float
    dense_fp32_bytes: int
    information_bound_bytes: int
    kept_share: dict[str, float]  # entries kept per step / params: mean, min, max
    variable: bool  # whether the count varies (format 3's tolerance) or is exactly k
    bytes_estimated: bool = True


def log2_binomial(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def information_bound_bits(n: int, k: int, value_bits: int) -> float:
    """Fewest bits for one step of one layer: which k of n positions, plus k values."""
    return log2_binomial(n, k) + k * value_bits


def bound_bytes(n: int, counts: np.ndarray, value_bits: int) -> int:
    """The information bound of a layer's steps that kept `counts` entries each."""
    values, times = np.unique(counts, return_counts=True)
    bits = sum(
        int(t) * information_bound_bits(n, int(m), value_bits)
        for m, t in zip(values, times, strict=True)
    )
    return math.ceil(bits / 8)


def layer_costs(
    layout: StoreLayout, accounting: StoreAccounting, counts: np.ndarray
) -> list[LayerCost]:
    """Each layer's bytes, against its dense size and its information bound, and the
    share of its entries each step kept (`counts`: steps x layers)."""
    bits = VALUE_BITS[layout.value_dtype]
    steps = len(counts)
    costs = []
    for i, (layer, (ib, vb)) in enumerate(zip(layout.layers, accounting.layers, strict=True)):
        kept = counts[:, i].astype(np.int64)
        share = kept / layer.numel
        costs.append(
            LayerCost(
                name=layer.name,
                params=layer.numel,
                kept_per_step=layer.k,
                keep=layer.keep,
                index_bytes=ib,
                value_bytes=vb,
                bits_per_entry=8 * (ib + vb) / kept.sum() if steps else 0.0,
                dense_fp32_bytes=4 * layer.numel * steps,
                information_bound_bytes=bound_bytes(layer.numel, kept, bits),
                kept_share={
                    k: float(f(share)) if steps else 0.0
                    for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))
                },
                variable=layer.variable,
                bytes_estimated=accounting.layers_estimated,
            )
        )
    return costs


def storage_report(run_path: Path, project_epochs: int = 100) -> dict:
    """The storage report as a JSON-ready dict (an incomplete run reports what it has)."""
    run = Run.open(run_path, require_complete=False)
    store = run.store(require_complete=False)
    if store is None:
        raise StoreError(
            f"Run {run.path} has no update store (it was trained with --no-record).",
            hint="train again without --no-record to record updates",
        )
    info = store.info()
    layout = info.layout
    steps = info.committed_steps
    accounting = store.accounting()
    usage = accounting.parts
    counts = store.kept_counts()
    layers = layer_costs(layout, accounting, counts)
    update_bytes = accounting.update_bytes
    dense = 4 * layout.num_params * steps
    bound = sum(c.information_bound_bytes for c in layers)
    total = accounting.total_bytes
    kept = int(counts.sum())
    steps_per_epoch = steps / max(1, len(set(store.index().epochs.tolist())))
    per_step = total / steps if steps else 0.0
    return {
        "run": str(run.path),
        "steps": steps,
        "complete": info.complete,
        "value_dtype": layout.value_dtype,
        "schedule": info.schedule,
        "params": layout.num_params,
        "kept_per_step": sum(layer.k for layer in layout.layers),
        "total_bytes": total,
        "update_bytes": update_bytes,
        "index_bytes_on_disk": usage.get("updates/indices", 0),
        "value_bytes_on_disk": usage.get("updates/values", 0),
        "sample_index_bytes": sum(v for k, v in usage.items() if k.startswith("index/")),
        "kept_entries": kept,
        "bits_per_kept_entry": 8 * update_bytes / kept if kept else 0.0,
        "dense_fp32_bytes": dense,
        "ratio_to_dense_fp32": dense / update_bytes if update_bytes else None,
        "information_bound_bytes": bound,
        "ratio_to_information_bound": update_bytes / bound if bound else None,
        "files": accounting.files,
        "projection": {
            "epochs": project_epochs,
            "steps": round(steps_per_epoch * project_epochs),
            "bytes": round(per_step * steps_per_epoch * project_epochs),
        },
        "layers": [asdict(c) for c in layers],
        # layer-input covariances for pgu: the run's, and each pgu version's updated copy
        "covariance": covariance_stores(run),
        "value_bytes_per_entry": numpy_value_dtype(layout.value_dtype).itemsize,
        "checksummed": accounting.checksummed,
    }


def covariance_stores(run: Run) -> list[dict]:
    """Every covariance store in the run: the run's, then each pgu version's."""
    places = [("run", run.path / COVARIANCE_NAME)]
    places += [(f"version {v}", run.version_dir(v) / COVARIANCE_NAME) for v in run.versions()]
    return [
        {"where": where, "path": str(path), "bytes": disk_bytes(path)}
        for where, path in places
        if path.exists()
    ]
