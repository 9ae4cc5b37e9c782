"""The training loop's memory layout on the CPU: seconds per step of each bundled
convolutional model on real MNIST, trained through `training.fit` in channels-last layout
(what the loop does on the CPU) and in the contiguous layout (what it did before), side by
side in one run.

Each round trains the same model from the same weights over the same batches once in each
layout, the order alternating between rounds; the ratio is the median of the rounds' ratios,
shown with its min and max. The largest weight difference between the two after the round's
steps says how far their float rounding moves training apart.

python benchmarks/bench_layout.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time

import numpy as np
import torch
from common import data_root, markdown_table, write_results

from unlearn_cli import cpu_layout, training
from unlearn_cli.data import load_dataset
from unlearn_cli.models.base import ModelSpec, create_model

# (model, batch, steps timed): the batch the quality report trains each model with
MODELS = [("lenet", 64, 200), ("convnet", 64, 60), ("alexnet", 32, 30), ("resnet9", 64, 8)]


def train_steps(model, data, batch: int, steps: int, channels_last: bool) -> tuple[float, dict]:
    """Seconds per step of `steps` SGD steps through `fit`, and the weights after them."""
    net = copy.deepcopy(model)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = training.epoch_batches(torch.arange(len(data.y_train)), batch, 1, seed=0)
    chosen = cpu_layout.trains_channels_last
    if not channels_last:  # the loop as it was: every layer contiguous
        cpu_layout.trains_channels_last = lambda *_: False
    try:
        start = time.perf_counter()
        training.fit(net, optimizer, data.x_train, data.y_train, itertools.islice(batches, steps))
        seconds = (time.perf_counter() - start) / steps
    finally:
        cpu_layout.trains_channels_last = chosen
    return seconds, {k: v.detach().clone() for k, v in net.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    data = load_dataset("mnist", data_root())
    spec = ModelSpec(data.channels, data.image_size, data.num_classes)
    results, rows = [], []
    for name, batch, steps in MODELS:
        torch.manual_seed(0)
        model = create_model(name, spec)
        train_steps(model, data, batch, 2, True)  # warm up both code paths once
        train_steps(model, data, batch, 2, False)
        ratios, plain, last, diff = [], [], [], 0.0
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {cl: train_steps(model, data, batch, steps, cl) for cl in order}
            plain.append(got[False][0])
            last.append(got[True][0])
            ratios.append(got[False][0] / got[True][0])
            diff = max(diff, max(float((got[False][1][k] - got[True][1][k]).abs().max())
                                 for k in got[False][1]))  # fmt: skip
        result = {
            "model": name,
            "batch_size": batch,
            "steps": steps,
            "contiguous_ms": 1000 * float(np.median(plain)),
            "channels_last_ms": 1000 * float(np.median(last)),
            "speedup": float(np.median(ratios)),
            "speedup_min": float(min(ratios)),
            "speedup_max": float(max(ratios)),
            "max_weight_difference": diff,
        }
        results.append(result)
        rows.append([name, batch, steps, f"{result['contiguous_ms']:.1f}",
                     f"{result['channels_last_ms']:.1f}",
                     f"{result['speedup']:.2f}× ({result['speedup_min']:.2f}–"
                     f"{result['speedup_max']:.2f})", f"{diff:.1e}"])  # fmt: skip
        print(rows[-1], flush=True)
    md = (
        "## The training loop's layout on the CPU (MNIST, SGD, median of "
        f"{args.rounds} rounds)\n\n"
        + markdown_table(
            [
                "model",
                "batch",
                "steps",
                "contiguous ms/step",
                "channels-last ms/step",
                "speed-up (min–max)",
                "largest weight difference",
            ],
            rows,
        )  # fmt: skip
    )
    write_results("layout", {"rounds": args.rounds, "models": results}, md)


if __name__ == "__main__":
    main()
