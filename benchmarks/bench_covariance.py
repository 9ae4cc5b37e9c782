"""Layer covariances (`unlearn covariance`, `train --covariance`) at the two precisions.

Each batch's r^T r is computed at the stored precision (`--dtype`, float32 by default) and
summed in float64; `--dtype float64` computes every product in float64, as every
measurement did before float32 products (so its column is the previous code's cost). Per
model, trained 1 epoch on real MNIST (resnet9 on its first 3,000 images), the two are
measured alternately, `--rounds` times each, by `ops.covariance.measure` over the whole
training split. Beside the times: how far the float32 sums are from the float64 ones (the
largest entry difference relative to the largest entry, per layer) and the directions pgu
keeps at its default gamma 0.95 from each.

    python benchmarks/bench_covariance.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import WORK, data_root, markdown_table, write_results
from quality import raw_arrays

from unlearn_cli.input_covariance import input_covariance
from unlearn_cli.ops.covariance import measure
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.rundir import Run
from unlearn_cli.training import TrainConfig

MODELS = [("lenet", None), ("mlp", None), ("resnet9", 3000)]
GAMMA = 0.95


def train(model: str, limit: int | None, quick: bool) -> Run:
    path = WORK / f"covariance-{model}"
    dataset = "mnist"
    if limit or quick:  # the first `limit` training images, as the report's settings do
        a = raw_arrays("mnist", data_root())
        n = 2000 if quick else limit
        npz = WORK / f"covariance-{model}.npz"
        np.savez(npz, **{**a, "x_train": a["x_train"][:n], "y_train": a["y_train"][:n]})
        dataset = f"npz:{npz}"
    config = TrainConfig(dataset=dataset, model=model, epochs=1, seed=0)
    train_run(config, RecordConfig(enabled=False), path, force=True, data_root=data_root())
    return Run.open(path)


def compare(run: Run, rounds: int) -> dict:
    data = run.load_dataset(data_root())
    model = run.load_model(0)
    none = np.empty(0, np.int64)
    seconds: dict[str, list[float]] = {"float64": [], "float32": []}
    states = {}
    for _ in range(rounds):
        for dtype in seconds:
            start = time.perf_counter()
            states[dtype] = measure(model, data, none, 0, "bench", dtype)
            seconds[dtype].append(time.perf_counter() - start)
    # the sums themselves, before the eigen-decomposition and storage
    x = data.x_train
    sums = {
        name: input_covariance(model, x, precision=getattr(torch, name))
        for name in ("float64", "float32")
    }
    layers = []
    for name, c64 in sums["float64"].items():
        rel = float((sums["float32"][name] - c64).abs().max() / c64.abs().max())
        layers.append(
            {
                "layer": name,
                "dim": int(c64.shape[0]),
                "max_rel_diff": rel,
                "kept_float64": states["float64"].bases[name].kept(GAMMA),
                "kept_float32": states["float32"].bases[name].kept(GAMMA),
            }
        )
    f64, f32 = min(seconds["float64"]), min(seconds["float32"])
    return {
        "samples": int(len(x)),
        "seconds": seconds,
        "fastest_float64": f64,
        "fastest_float32": f32,
        "speedup": f64 / f32,
        "speedup_median": float(np.median(seconds["float64"]) / np.median(seconds["float32"])),
        "layers": layers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = {}
    for model, limit in MODELS:
        run = train(model, limit, args.quick)
        results[model] = {"train_limit": limit, **compare(run, args.rounds)}
        r = results[model]
        print(f"{model}: float64 {r['fastest_float64']:.2f} s, float32 {r['fastest_float32']:.2f}")
    rows = [
        [
            model,
            r["samples"],
            f"{r['fastest_float64']:.2f}",
            f"{r['fastest_float32']:.2f}",
            f"{r['speedup']:.2f}×",
            f"{r['speedup_median']:.2f}×",
            f"{max(layer['max_rel_diff'] for layer in r['layers']):.1e}",
            sum(layer["kept_float64"] != layer["kept_float32"] for layer in r["layers"]),
            len(r["layers"]),
        ]
        for model, r in results.items()
    ]
    md = "\n".join(
        [
            "# Layer covariances: float32 products against float64\n",
            f"Whole MNIST training split (resnet9: first 3,000), {args.rounds} alternated "
            "rounds each, seconds of the fastest.\n",
            markdown_table(
                [
                    "model",
                    "samples",
                    "float64 s",
                    "float32 s",
                    "speed-up",
                    "speed-up (median)",
                    "largest relative difference",
                    "layers whose kept count differs",
                    "layers",
                ],
                rows,
            ),
        ]
    )
    write_results("covariance", {"rounds": args.rounds, "results": results}, md)


if __name__ == "__main__":
    main()
