"""Layer covariances (`unlearn covariance`, `train --covariance`): how their products run.

Three ways, measured alternately `--rounds` times each by `ops.covariance.measure` over
the whole training split, per model trained 1 epoch on real MNIST (resnet9 on its first
3,000 images):

- float32: the default. Each batch's r^T r in float32, summed in float64; a wide stride-1
  conv's products from channel products of shifted images (`shifted_conv_products`);
- float32, unfold: the same products from the unfolded patches of every layer (the code
  before the shifted products);
- float64: every product in float64 (shifted where they pay).

Beside the times: how far each float32 sum is from the float64 one (the largest entry
difference relative to the largest entry, per layer) and the directions pgu keeps at its
default gamma 0.95. Then single layers on random non-negative activations (64 images): the
shapes of ResNet-9 on 28x28 inputs and of ResNet-18's stages on 224x224 ones.

    python benchmarks/bench_covariance.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np
import torch
from common import WORK, data_root, markdown_table, write_results
from quality import raw_arrays

import unlearn_cli.input_covariance as ic
from unlearn_cli.input_covariance import input_covariance, layer_inputs, shifted_conv_products
from unlearn_cli.ops.covariance import measure
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig

MODELS = [("lenet", None), ("mlp", None), ("resnet9", 3000)]
GAMMA = 0.95
VARIANTS = {"float32": "float32", "float32, unfold": "float32", "float64": "float64"}
# (in channels, image side): ResNet-9 on 28x28 (1.0, 2.*, 3.0 and 4.0), ResNet-18 on 224x224
LAYERS = [(32, 28), (64, 14), (128, 7), (64, 56), (128, 28), (256, 14), (512, 7)]


@contextmanager
def unfolding(on: bool):
    """Every conv's products from its unfolded patches while `on` (the previous code)."""
    pays = ic.shifts_pay
    if on:
        ic.shifts_pay = lambda module, x: False
    try:
        yield
    finally:
        ic.shifts_pay = pays


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
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    states = {}
    for _ in range(rounds):
        for name, dtype in VARIANTS.items():
            with unfolding(name.endswith("unfold")):
                start = time.perf_counter()
                states[name] = measure(model, data, none, 0, "bench", dtype)
                seconds[name].append(time.perf_counter() - start)
    # the sums themselves, before the eigen-decomposition and storage
    x = data.x_train
    sums = {}
    for name, dtype in VARIANTS.items():
        with unfolding(name.endswith("unfold")):
            sums[name] = input_covariance(model, x, precision=getattr(torch, dtype))
    layers = []
    for layer, c64 in sums["float64"].items():
        scale = c64.abs().max()
        layers.append(
            {
                "layer": layer,
                "dim": int(c64.shape[0]),
                "max_rel_diff": float((sums["float32"][layer] - c64).abs().max() / scale),
                "max_rel_diff_unfold": float(
                    (sums["float32, unfold"][layer] - c64).abs().max() / scale
                ),
                **{f"kept {name}": states[name].bases[layer].kept(GAMMA) for name in VARIANTS},
            }
        )
    fastest = {name: min(t) for name, t in seconds.items()}
    median = {name: float(np.median(t)) for name, t in seconds.items()}
    return {
        "samples": int(len(x)),
        "seconds": seconds,
        "fastest": fastest,
        "speedup_shifted": fastest["float32, unfold"] / fastest["float32"],
        "speedup_shifted_median": median["float32, unfold"] / median["float32"],
        "speedup_float32": fastest["float64"] / fastest["float32"],
        "layers": layers,
    }


def layer_sweep(rounds: int) -> list[dict]:
    """One 3x3 "same" conv's products over 64 random non-negative images, unfolded against
    shifted (both float32), alternated `rounds` times; milliseconds of the median."""
    out = []
    gen = torch.Generator().manual_seed(0)
    for channels, side in LAYERS:
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        x = torch.relu(torch.randn(64, channels, side, side, generator=gen))
        times: dict[str, list[float]] = {"unfold": [], "shifted": []}
        for _ in range(rounds):
            start = time.perf_counter()
            rows = layer_inputs(conv, x)
            unfolded = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64)
            for first in range(0, len(rows), ic.CHUNK_ROWS):
                part = rows[first : first + ic.CHUNK_ROWS]
                unfolded.add_(part.T @ part)
            times["unfold"].append(time.perf_counter() - start)
            start = time.perf_counter()
            shifted = shifted_conv_products(conv, x, torch.float32)
            times["shifted"].append(time.perf_counter() - start)
        exact = layer_inputs(conv, x.double())
        exact = exact.T @ exact
        ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        out.append(
            {
                "channels": channels,
                "side": side,
                "shifts_pay": ic.shifts_pay(conv, x),
                "ms": ms,
                "speedup": ms["unfold"] / ms["shifted"],
                "max_rel_diff_unfold": float((unfolded - exact).abs().max() / exact.abs().max()),
                "max_rel_diff_shifted": float((shifted - exact).abs().max() / exact.abs().max()),
            }
        )
        print(f"layer {channels}x{side}x{side}: {ms['unfold']:.0f} against {ms['shifted']:.0f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = {}
    for model, limit in MODELS:
        run = train(model, limit, args.quick)
        results[model] = {"train_limit": limit, **compare(run, args.rounds)}
        fastest = results[model]["fastest"]
        print(f"{model}: " + ", ".join(f"{k} {v:.2f} s" for k, v in fastest.items()))
    sweep = layer_sweep(args.rounds)
    rows = [
        [
            model,
            r["samples"],
            f"{r['fastest']['float32, unfold']:.2f}",
            f"{r['fastest']['float32']:.2f}",
            f"{r['speedup_shifted']:.2f}× ({r['speedup_shifted_median']:.2f}×)",
            f"{r['fastest']['float64']:.2f}",
            f"{max(layer['max_rel_diff_unfold'] for layer in r['layers']):.1e}",
            f"{max(layer['max_rel_diff'] for layer in r['layers']):.1e}",
            sum(len({layer[f"kept {name}"] for name in VARIANTS}) > 1 for layer in r["layers"]),
            len(r["layers"]),
        ]
        for model, r in results.items()
    ]
    layer_rows = [
        [
            f"{r['channels']} × {r['side']}²",
            "yes" if r["shifts_pay"] else "no",
            f"{r['ms']['unfold']:.0f}",
            f"{r['ms']['shifted']:.0f}",
            f"{r['speedup']:.2f}×",
            f"{r['max_rel_diff_unfold']:.1e}",
            f"{r['max_rel_diff_shifted']:.1e}",
        ]
        for r in sweep
    ]
    md = "\n".join(
        [
            "# Layer covariances: shifted and unfolded products, float32 and float64\n",
            f"Whole MNIST training split (resnet9: first 3,000), {args.rounds} alternated "
            "rounds each, seconds of the fastest (speed-up of the medians in brackets). "
            "Relative differences are the largest entry difference from the float64 sums, "
            "over the largest entry, over the model's layers.\n",
            markdown_table(
                [
                    "model",
                    "samples",
                    "float32, unfold s",
                    "float32 s",
                    "speed-up",
                    "float64 s",
                    "difference, unfold",
                    "difference, float32",
                    "layers whose kept count differs",
                    "layers",
                ],
                rows,
            ),
            "\n## Single 3×3 convolutions (64 random non-negative images, float32)\n",
            f"Median of {args.rounds} alternated rounds. `shifts_pay`: whether the tool uses "
            "the shifted products for this layer. Differences against the float64 unfold.\n",
            markdown_table(
                [
                    "in channels × image",
                    "shifts_pay",
                    "unfold ms",
                    "shifted ms",
                    "speed-up",
                    "difference, unfold",
                    "difference, shifted",
                ],
                layer_rows,
            ),
        ]
    )
    write_results("covariance", {"rounds": args.rounds, "results": results, "layers": sweep}, md)


if __name__ == "__main__":
    main()
