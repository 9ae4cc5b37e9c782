"""Issue 2: LeNet on real MNIST for one epoch: test accuracy and seconds per epoch.

python benchmarks/bench_train.py [--epochs 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import time

from common import WORK, data_root, markdown_table, write_results

from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.train_config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = TrainConfig(dataset="mnist", model="lenet", epochs=args.epochs, seed=args.seed)
    out = WORK / "train-lenet-mnist"
    start = time.perf_counter()
    summary = train_run(config, RecordConfig(enabled=False), out, data_root=data_root(), force=True)
    total = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    per_epoch = summary["train_seconds"] / args.epochs
    result = {
        "config": config.__dict__,
        "test_accuracy": summary["test_accuracy"],
        "seconds_per_epoch": per_epoch,
        "steps": summary["steps"],
        "wall_seconds_including_data_load": total,
        "target": {"test_accuracy_min": 0.97},
        "met": summary["test_accuracy"] >= 0.97,
    }
    md = "## LeNet on MNIST (train only, no recording)\n\n" + markdown_table(
        ["epochs", "steps", "test accuracy", "s / epoch", "target ≥ 97%"],
        [
            [
                args.epochs,
                summary["steps"],
                f"{summary['test_accuracy']:.2%}",
                f"{per_epoch:.1f}",
                "met" if result["met"] else "MISSED",
            ]
        ],
    )
    write_results("train_lenet_mnist", result, md)


if __name__ == "__main__":
    main()
