"""Issue 23: the per-example likelihood-ratio attack against the feature attack, over seeds.

MNIST/LeNet, 1 epoch, default record; per seed a run, a request of 100 random training
samples, and `replay`, `partial-amnesiac`, partial `optimize` and `retrain` (the reference)
from version 0. Every version is judged by `unlearn eval --shadows K` against the retrain:
the feature attack's member rate, the loss AUC and LiRA's AUC and TPR at 1% FPR, for the
original, each version and the reference. Each version's difference from the reference is
paired by seed; the table shows the size of the mean difference with the differences'
standard deviation, and marks it "noise" where that spread is larger than the difference.

    python benchmarks/bench_lira.py [--seeds 3] [--shadows 16] [--quick]
    python benchmarks/bench_lira.py --table-only   # redraw the table from results/lira.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import RESULTS, WORK, data_root, markdown_table, write_results

from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.train_config import TrainConfig

METHODS = {  # label -> (method, params)
    "replay": ("replay", {}),
    "partial-amnesiac": ("partial-amnesiac", {}),
    "optimize, partial": ("optimize", {"partial": True}),
}
METRICS = {  # key in eval's models -> label
    "forget_acc": "forget acc",
    "test_acc": "test acc",
    "member_rate": "feature-attack member rate",
    "loss_auc": "loss AUC",
    "lira_auc": "LiRA AUC",
    "lira_tpr_at_1pct_fpr": "LiRA TPR @ 1% FPR",
}


def one_seed(seed: int, shadows: int, n_forget: int) -> dict:
    run = WORK / f"lira-seed{seed}"
    config = TrainConfig(dataset="mnist", model="lenet", epochs=1, batch_size=64, seed=seed)
    train_run(config, RecordConfig(), run, data_root=data_root(), force=True)
    ids = np.random.default_rng(seed).choice(60_000, n_forget, replace=False)
    request = ForgetRequest(ids=tuple(int(i) for i in ids))
    reference = forget_run(
        run, ForgetConfig("retrain", from_version=0), request, data_root=data_root()
    )["version"]
    out: dict = {"seed": seed, "methods": {}}
    for label, (method, params) in METHODS.items():
        receipt = forget_run(
            run,
            ForgetConfig(method, params=params, from_version=0, max_affected_share=1.0),
            request,
            data_root=data_root(),
        )
        start = time.perf_counter()
        doc, _ = evaluate(
            run, receipt["version"], str(reference), data_root=data_root(), shadows=shadows
        )
        out["methods"][label] = {
            "version": doc["models"]["version"],
            "eval_seconds": time.perf_counter() - start,
        }
        out["original"] = doc["models"]["original"]
        out["reference"] = doc["models"]["reference"]
        out["lira"] = doc["lira"]
        print(seed, label, {k: doc["models"]["version"][k] for k in METRICS}, flush=True)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def table(per_seed: list[dict], shadows: int) -> str:
    rows = []
    for who in ("original", "reference", *METHODS):
        cells = [who if who in METHODS else f"{who} (level)"]
        for key in METRICS:
            if who in METHODS:  # version - reference, paired by seed
                diffs = [s["methods"][who]["version"][key] - s["reference"][key] for s in per_seed]
                m, sd = mean_std(diffs)
                cells.append(
                    f"{100 * abs(m):.1f} ± {100 * sd:.1f}" + (" (noise)" if sd > abs(m) else "")
                )
            else:
                m, sd = mean_std([s[who][key] for s in per_seed])
                cells.append(f"{100 * m:.1f} ± {100 * sd:.1f}")
        rows.append(cells)
    seconds = [s["lira"]["shadow_train_seconds"] / shadows for s in per_seed]
    return "\n".join(
        [
            f"## Attacks on a 100-sample request (MNIST/LeNet, 1 epoch; {len(per_seed)} seeds, "
            f"{shadows} shadows)\n",
            "Rows `original` and `reference` give each metric's level (points, mean ± std "
            "over seeds). The method rows give |mean(version − reference)| over the seeds, "
            "paired by seed, ± the differences' standard deviation, marked (noise) where the "
            "spread exceeds the difference. AUCs × 100.\n",
            markdown_table(["model", *METRICS.values()], rows),
            f"\nOne shadow (half of the training split and of the test split, the run's "
            f"config) took {np.mean(seconds):.1f} s on average; {shadows} shadows "
            f"{np.mean(seconds) * shadows:.0f} s per run, once.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 4 shadows")
    parser.add_argument("--table-only", action="store_true", help="redraw from results/lira.json")
    args = parser.parse_args()
    if args.table_only:
        saved = json.loads((RESULTS / "lira.json").read_text())
        md = table(saved["per_seed"], saved["shadows"])
        (RESULTS / "lira.md").write_text(md + "\n")
        print(md)
        return
    seeds, shadows = (2, 4) if args.quick else (args.seeds, args.shadows)
    start = time.perf_counter()
    per_seed = [one_seed(s, shadows, 100) for s in range(seeds)]
    write_results(
        "lira_quick" if args.quick else "lira",
        {
            "seeds": seeds,
            "shadows": shadows,
            "per_seed": per_seed,
            "wall_seconds": time.perf_counter() - start,
        },
        table(per_seed, shadows),
    )


if __name__ == "__main__":
    main()
