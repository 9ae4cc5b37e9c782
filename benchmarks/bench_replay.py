"""Replay against retraining, side by side in one run (LeNet on real MNIST, 2 epochs,
batch 32, the default depth-0.2 fp16 record).

1. The amnesiac paper's rare-class protocol: the training split keeps 100 images of
   class 3; every method forgets all of them. Targets for replay: forget <= 1%, retained
   and test accuracy within 0.3 points of retrain, >= 5x faster.
2. Random requests of 10, 100, 1,000 and 3,000 samples on full MNIST (the share of
   affected steps grows with the size): replay, partial optimize, partial-amnesiac and
   auto against retrain. Targets for 10 samples: every accuracy within 0.3 points of
   retrain, >= 30x faster. The sweep sets `auto`'s `max_replay_share`.

    python benchmarks/bench_replay.py [--quick]
"""

from __future__ import annotations

import os

import numpy as np
from bench_forget import RARE_CLASS, Scorer, rare_class_npz
from common import WORK, data_root, markdown_table, parse_args, pct, write_results

from unlearn_cli.data import DATA_ROOT_ENV
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.train_config import TrainConfig

METHODS = {  # label -> (method, parameters); retrain first: the reference of every row
    "retrain": ("retrain", {}),
    "replay": ("replay", {}),
    "auto": ("auto", {}),
    "optimize, partial": ("optimize", {"partial": True}),
    "partial-amnesiac": ("partial-amnesiac", {}),
}
SIZES = (10, 100, 1000, 3000)
KEYS = ("forget_acc", "retain_acc", "test_acc")


def compare(run, request: ForgetRequest, forget_ids: np.ndarray, labels) -> list[dict]:
    """Every method from version 0 on one request, scored against retrain's version."""
    scorer = Scorer(run, forget_ids)
    rows = []
    for label in labels:
        method, params = METHODS[label]
        config = ForgetConfig(method, params, from_version=0)
        receipt = forget_run(run, config, request, data_root=data_root())
        rows.append(
            {
                "method": label,
                "chosen": (receipt.get("auto") or {}).get("chosen"),
                "seconds": receipt["wall_seconds"],
                "affected_share": receipt["steps"]["affected_share"],
                "steps_replayed": receipt["details"].get("steps_replayed"),
                **scorer.score(receipt["version"]),
            }
        )
        print(request.describe()["ids"], rows[-1], flush=True)
    ref = rows[0]
    for row in rows:
        row["speedup"] = ref["seconds"] / row["seconds"] if row["seconds"] else None
        row["max_gap"] = max(abs(row[k] - ref[k]) for k in KEYS)
    return rows


def rare_class(epochs: int, labels) -> list[dict]:
    npz = WORK / "mnist-rare3.npz"
    WORK.mkdir(parents=True, exist_ok=True)
    rare_class_npz(npz)
    run = WORK / "replay-rare"
    train_run(TrainConfig(dataset=f"npz:{npz}", model="lenet", epochs=epochs), RecordConfig(), run,
              force=True)  # fmt: skip
    y = np.load(npz)["y_train"]
    ids = np.flatnonzero(y == RARE_CLASS)
    return compare(run, ForgetRequest(ids=tuple(ids.tolist())), ids, labels)


def random_requests(epochs: int, sizes, labels) -> dict[int, list[dict]]:
    run = WORK / "replay-mnist"
    config = TrainConfig(dataset="mnist", model="lenet", epochs=epochs)
    train_run(config, RecordConfig(), run, data_root=data_root(), force=True)
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        ids = np.sort(rng.choice(60000, size, replace=False))
        out[size] = compare(run, ForgetRequest(ids=tuple(ids.tolist())), ids, labels)
    return out


def table(rows: list[dict]) -> str:
    return markdown_table(
        ["method", "forget %", "retained %", "test %", "max gap (points)", "s", "speed-up"],
        [
            [
                r["method"] + (f" → {r['chosen']}" if r["chosen"] else ""),
                pct(r["forget_acc"]),
                pct(r["retain_acc"]),
                pct(r["test_acc"]),
                f"{100 * r['max_gap']:.2f}",
                f"{r['seconds']:.2f}",
                f"{r['speedup']:.1f}×" if r["speedup"] else "",
            ]
            for r in rows
        ],
    )


def targets(rare: list[dict], ten: list[dict]) -> dict:
    by = {r["method"]: r for r in rare}["replay"]
    small = {r["method"]: r for r in ten}["replay"]
    return {
        "rare_class": {
            "forget_acc": by["forget_acc"],
            "max_gap_retained_test": max(
                abs(by[k] - rare[0][k]) for k in ("retain_acc", "test_acc")
            ),
            "speedup": by["speedup"],
            "met": by["forget_acc"] <= 0.01
            and max(abs(by[k] - rare[0][k]) for k in ("retain_acc", "test_acc")) <= 0.003
            and by["speedup"] >= 5,
        },
        "ten_samples": {
            "max_gap": small["max_gap"],
            "speedup": small["speedup"],
            "met": small["max_gap"] <= 0.003 and small["speedup"] >= 30,
        },
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    os.environ.setdefault(DATA_ROOT_ENV, str(data_root()))  # the scorer reloads the data
    labels = ["retrain", "replay", "auto"] if args.quick else list(METHODS)
    sizes = SIZES[:2] if args.quick else SIZES
    rare = rare_class(args.epochs, labels)
    sweep = random_requests(args.epochs, sizes, labels)
    goals = targets(rare, sweep[10])
    md = [
        f"## Rare class (MNIST/LeNet, 100 images of class {RARE_CLASS}, {args.epochs} epochs)",
        "",
        table(rare),
        "",
        f"Targets (replay: forget ≤ 1%, retained and test within 0.3 points, ≥ 5×): "
        f"{'met' if goals['rare_class']['met'] else 'MISSED'}.",
    ]
    for size, rows in sweep.items():
        share = rows[1]["affected_share"]
        md += ["", f"## {size} random samples ({share:.1%} of steps affected)", "", table(rows)]
    md += [
        "",
        f"Targets for 10 samples (replay: every accuracy within 0.3 points, ≥ 30×): "
        f"{'met' if goals['ten_samples']['met'] else 'MISSED'}.",
    ]
    payload = {
        "rare_class": rare,
        "random": {str(k): v for k, v in sweep.items()},
        "targets": goals,
    }
    write_results("replay_quick" if args.quick else "replay", payload, "\n".join(md))


if __name__ == "__main__":
    main()
