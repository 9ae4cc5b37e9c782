"""Prediction batch size on the CPU: 1,024 samples per batch (before) against batches that
keep their largest layer output within an activation budget (`training.prediction_batch`,
16 MiB now), with the budget swept beside them, side by side in one run.

Every model predicts the same random images through `predict_logits` (eval mode,
channels-last copy); the models' weights are their seeded initial ones (the arithmetic
does not depend on the values). Each round times every batch size once, in an order that
turns each round; medians over `--rounds`, and each round's ratio of the 1,024 batch's
time to the current rule's. The logits of every batch size are compared to the 1,024
batch's.

    python benchmarks/bench_predict.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import markdown_table, write_results

from unlearn_cli.models.base import ModelSpec, create_model
from unlearn_cli.predict import largest_output, predict_logits, prediction_batch

# (model, input channels, image size, samples)
CASES = [
    ("mlp", 1, 28, 4096),
    ("lenet", 1, 28, 4096),
    ("convnet", 1, 28, 2048),
    ("alexnet", 1, 28, 2048),
    ("resnet9", 1, 28, 2048),
    ("resnet9", 3, 64, 512),
    ("torchvision:resnet18", 3, 64, 512),
]
BUDGETS_MIB = (4, 8, 16, 32)


def timed(model: torch.nn.Module, x: torch.Tensor, batch: int | None) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = predict_logits(model, x, batch_size=batch)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results, rows = [], []
    for name, channels, size, n in CASES:
        torch.manual_seed(0)
        model = create_model(name, ModelSpec(channels, size, 10))
        x = torch.randn(n, channels, size, size)
        model.eval()
        with torch.inference_mode():
            per_sample = largest_output(model, x[:1])
            variants: dict[str, int | None] = {"1024": 1024}
            for mib in BUDGETS_MIB:
                variants[f"{mib} MiB"] = prediction_batch(model, x[:1], budget=mib * 2**20)
            now_batch = prediction_batch(model, x[:1])
        variants["now"] = None
        reference = predict_logits(model, x, batch_size=1024)
        names = list(variants)
        for v in names:  # warm up each batch size once
            timed(model, x[:64], variants[v])
        times: dict[str, list[float]] = {v: [] for v in names}
        equal = {v: True for v in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for v in order:
                seconds, out = timed(model, x, variants[v])
                times[v].append(seconds)
                equal[v] = equal[v] and torch.equal(out, reference)
        ratios = [a / b for a, b in zip(times["1024"], times["now"], strict=True)]
        result = {
            "model": name,
            "input": [channels, size, size],
            "samples": n,
            "largest_activation_bytes": per_sample,
            "batch_now": now_batch,
            "batches": {v: (b if b is not None else now_batch) for v, b in variants.items()},
            "median_ms_per_sample": {v: 1000 * float(np.median(t)) / n for v, t in times.items()},
            "speedup": float(np.median(ratios)),
            "speedup_min": float(min(ratios)),
            "speedup_max": float(max(ratios)),
            "same_logits": equal,
        }
        results.append(result)
        ms = result["median_ms_per_sample"]
        rows.append(
            [f"{name} {channels}×{size}×{size}", f"{per_sample / 1024:.0f}" if per_sample else "–"]
            + [f"{ms[v]:.3f} ({result['batches'][v]})" for v in names[:-1]]
            + [f"{now_batch}", f"{result['speedup']:.2f}× ({result['speedup_min']:.2f}–"
               f"{result['speedup_max']:.2f})", "yes" if all(equal.values()) else "NO"]
        )  # fmt: skip
        print(rows[-1], flush=True)
    md = (
        f"## Prediction batch size on the CPU (ms per sample, median of {args.rounds} "
        "rounds; the batch in brackets)\n\n"
        + markdown_table(
            ["model, input", "largest output per sample (KiB)"]
            + ["batch 1,024"]
            + [f"budget {m} MiB" for m in BUDGETS_MIB]
            + ["batch now", "speed-up now over 1,024 (min–max)", "same logits"],
            rows,
        )
    )
    write_results("predict", {"rounds": args.rounds, "cases": results}, md)


if __name__ == "__main__":
    main()
