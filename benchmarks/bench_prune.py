"""Issue 9: forgetting on sparse models, plain and with un-pruning, against retrain + re-prune.

Real MNIST, LeNet trained 2 epochs, pruned by `unlearn prune` to 80% and 95% sparsity
(3 rounds, 1 epoch of fine-tuning after each). Two requests (the whole class 3; a
random 1% of the training samples, seed 0), two methods (label-flip, optimize) with
their defaults, each plain and with `--unprune` at two re-grow shares. Every version is
scored by `unlearn eval` against the reference, retrain + re-prune with the same
schedule on the retained samples: forget / retained / test accuracy, the feature
attack's member rate, and the masks' intersection over union with the reference's.

    python benchmarks/bench_prune.py [--epochs 2] [--quick]
"""

from __future__ import annotations

import time

import numpy as np
from common import WORK, data_root, markdown_table, parse_args, pct, write_results

from unlearn_cli.ops.evaluate import evaluate
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.prune import prune_run
from unlearn_cli.ops.pruned import UnpruneParams
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.pruning import PruneSchedule
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig

METHODS = ["label-flip", "optimize"]
UNPRUNE = [None, 0.1, 0.5]  # the re-grow share; None: the plain method on the sparse model


def row(run_path, version: int, ref: int, label: str, seconds: float | None, request) -> dict:
    doc, _ = evaluate(run_path, version, str(ref), request, data_root=data_root())
    m = doc["models"]["version"]
    return {
        "variant": label,
        "version": version,
        "seconds": seconds,
        "forget_acc": m["forget_acc"],
        "retain_acc": m["retain_acc"],
        "test_acc": m["test_acc"],
        "member_rate": m["member_rate"],
        "mask_iou": doc["mask_overlap"]["overall"] if doc["mask_overlap"] else None,
        "avg_gap": doc["gap"]["average"],
    }


def scenario(run_path, sparse: int, request: ForgetRequest, quick: bool) -> list[dict]:
    kw = {"from_version": sparse, "data_root": data_root()}
    ref = forget_run(run_path, ForgetConfig("retrain"), request, **kw)
    rows = [
        row(run_path, sparse, ref["version"], "sparse model (before)", None, request),
        row(
            run_path,
            ref["version"],
            ref["version"],
            "retrain + re-prune",
            ref["wall_seconds"],
            request,
        ),
    ]
    for method in METHODS[:1] if quick else METHODS:
        for unprune in UNPRUNE[:2] if quick else UNPRUNE:
            regrow = UnpruneParams(grow=unprune) if unprune else None
            receipt = forget_run(run_path, ForgetConfig(method, unprune=regrow), request, **kw)
            label = method + (f", --unprune grow={unprune}" if unprune else "")
            rows.append(
                row(
                    run_path,
                    receipt["version"],
                    ref["version"],
                    label,
                    receipt["wall_seconds"],
                    request,
                )
            )
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    return markdown_table(
        ["variant", "forget %", "retain %", "test %", "MIA member %", "mask IoU", "gap", "s"],
        [
            [
                r["variant"],
                pct(r["forget_acc"]),
                pct(r["retain_acc"]),
                pct(r["test_acc"]),
                pct(r["member_rate"]),
                "–" if r["mask_iou"] is None else f"{r['mask_iou']:.3f}",
                pct(r["avg_gap"]),
                "–" if r["seconds"] is None else f"{r['seconds']:.2f}",
            ]
            for r in rows
        ],
    )


def main() -> None:
    args = parse_args(__doc__)
    start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    run = WORK / "prune-mnist"
    config = TrainConfig(dataset="mnist", model="lenet", epochs=args.epochs)
    summary = train_run(config, RecordConfig(enabled=False), run, data_root=data_root(), force=True)
    y = Run.open(run).load_dataset(data_root()).y_train.numpy()
    rng = np.random.default_rng(0)
    random_ids = np.sort(rng.choice(len(y), len(y) // 100, replace=False))
    requests = {
        "class 3": ForgetRequest(classes=("3",)),
        "random 1%": ForgetRequest(ids=tuple(random_ids.tolist())),
    }
    results, md, pruned = {}, [], {}
    for sparsity in [0.8] if args.quick else [0.8, 0.95]:
        p = prune_run(
            run, PruneSchedule(sparsity, rounds=3, finetune_epochs=1), from_version=0,
            data_root=data_root(),
        )  # fmt: skip
        pruned[sparsity] = {k: p[k] for k in ("version", "wall_seconds", "test_accuracy")}
        for name, request in requests.items():
            if args.quick and name == "class 3":
                continue
            rows = scenario(run, p["version"], request, args.quick)
            results[f"{sparsity:g} {name}"] = rows
            md += [
                f"\n## {sparsity:.0%} sparse, {name} (pruned in {p['wall_seconds']:.0f} s, "
                f"test accuracy {pct(p['test_accuracy'])}%)\n",
                table(rows),
            ]
    md.append(
        "\nReference: retrain on the retained samples, then the same pruning schedule (3 rounds,"
        " 1 fine-tuning epoch each). mask IoU: intersection over union of the kept weights with"
        " the reference's (1 = the same topology). gap: average gap to the reference over"
        " forget, retained, test accuracy and member rate, in points. s: the method's wall time"
        " (for the reference, retrain + re-prune). Each method with its defaults; `--unprune`"
        " with rounds=1 and the re-grow share shown."
    )
    write_results(
        "prune_quick" if args.quick else "prune",
        {
            "config": config.__dict__,
            "train": summary,
            "pruned": {str(k): v for k, v in pruned.items()},
            "scenarios": results,
            "wall_seconds": time.perf_counter() - start,
        },
        "\n".join(md),
    )


if __name__ == "__main__":
    main()
