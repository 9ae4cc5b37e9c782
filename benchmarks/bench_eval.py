"""`unlearn eval` at each stage of its speed-ups, side by side in one run.

MNIST/LeNet, 1 epoch; version 1 forgets class 3 (`label-flip -p partial=true`), version 2
is `retrain` on the same request, and eval scores version 1, the original and the
reference (3 models x 70,000 images). Three scorings, alternated `--repeats` times,
fastest of each:
- "first": predictions built an autograd graph, and the attack's members (retained
  samples) were predicted a second time;
- "shared": each sample predicted once, without a graph, by the contiguous model;
- "channels-last": convolutional models predicted through a channels-last copy;
- "now": the code as it is (that copy also runs the ReLUs after a convolution or linear
  layer in place).

Then the whole command (`python -m unlearn_cli eval RUN --version 1 --reference 2 --json`,
a fresh process: imports, data, scoring) from this checkout and from a git worktree of
`--against` (default e53ce0f, the code before issue 22's eval work), alternated
`--repeats` times on the same run.

    python benchmarks/bench_eval.py [--repeats 3] [--against COMMIT]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from common import WORK, data_root, markdown_table, write_results

from unlearn_cli import predict
from unlearn_cli.ops import evaluate as ev
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.train_config import TrainConfig


def predict_with_graph(model, x, batch_size=1024):
    """The earlier `predict_logits`: eval mode, but autograd on."""
    was = model.training
    model.eval()
    out = [model(x[i : i + batch_size]).detach() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out)


VARIANTS = {
    "first": lambda: mock.patch.multiple(
        ev, predict_logits=predict_with_graph, subset_logits=lambda *a: None
    ),
    "shared": lambda: mock.patch.object(predict, "predictor_copy", lambda model: None),
    "channels-last": lambda: mock.patch.object(predict, "_in_place_relus", lambda model: []),
    "now": contextlib.nullcontext,
}


def timed(run, root, variant: str) -> tuple[float, dict]:
    with VARIANTS[variant]():
        start = time.perf_counter()
        doc, _ = ev.evaluate(run, 1, "2", data_root=root)
        return time.perf_counter() - start, doc


BEFORE_EVAL_WORK = "e53ce0f"


def worktree(commit: str) -> Path:
    """A git worktree of `commit` under the scratch folder (made once, reused)."""
    path = WORK / f"worktree-{commit}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(path), commit],
            cwd=Path(__file__).resolve().parent,
            check=True,
            capture_output=True,
        )
    return path


def command_seconds(source: Path, run: Path, root: Path) -> float:
    """Wall time of the whole `eval` command, importing unlearn_cli from `source`."""
    env = {**os.environ, "PYTHONPATH": str(source), "UNLEARN_DATA_ROOT": str(root)}
    argv = [sys.executable, "-m", "unlearn_cli", "--progress", "none", "eval", str(run)]
    start = time.perf_counter()
    subprocess.run(
        [*argv, "--version", "1", "--reference", "2", "--json"],
        cwd=WORK,  # not the checkout: PYTHONPATH alone decides which code runs
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def whole_command(run: Path, root: Path, against: str, repeats: int) -> dict:
    sources = {"now": Path(__file__).resolve().parent.parent, against: worktree(against)}
    seconds: dict[str, list[float]] = {k: [] for k in sources}
    for i in range(repeats):  # alternate, so drift in machine load hits both
        for name in sources if i % 2 == 0 else list(sources)[::-1]:
            seconds[name].append(command_seconds(sources[name], run, root))
            print(f"command, {name}: {seconds[name][-1]:.2f} s")
    return {
        "against": against,
        "seconds": seconds,
        "speedup_fastest": min(seconds[against]) / min(seconds["now"]),
        "speedup_median": statistics.median(seconds[against]) / statistics.median(seconds["now"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", default=BEFORE_EVAL_WORK, help="commit to compare with")
    args = parser.parse_args()
    root = data_root()
    run = WORK / "eval-mnist"
    train_run(
        TrainConfig(dataset="mnist", model="lenet", epochs=1),
        RecordConfig(),
        run,
        data_root=root,
        force=True,
    )
    request = ForgetRequest(classes=("3",))
    forget_run(run, ForgetConfig("label-flip", {"partial": True}), request, data_root=root)
    forget_run(run, ForgetConfig("retrain", from_version=0), request, data_root=root)
    ev.evaluate(run, 1, "2", data_root=root)  # imports and first-touch costs, untimed
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    docs = {}
    for _ in range(args.repeats):
        for variant in seconds:
            s, docs[variant] = timed(run, root, variant)
            seconds[variant].append(s)
            print(f"{variant}: {s:.2f} s")
    best = {k: min(v) for k, v in seconds.items()}
    same = {
        k: max(
            abs(docs[v]["models"]["version"][k] - docs["now"]["models"]["version"][k])
            for v in VARIANTS
        )
        for k in ("forget_acc", "retain_acc", "test_acc", "member_rate")
    }
    command = whole_command(run, root, args.against, args.repeats)
    rows = [[k, f"{best[k]:.2f}", ", ".join(f"{s:.2f}" for s in seconds[k])] for k in seconds]
    command_rows = [
        [k, f"{min(v):.2f}", f"{statistics.median(v):.2f}", ", ".join(f"{s:.2f}" for s in v)]
        for k, v in command["seconds"].items()
    ]
    md = "\n\n".join(
        [
            "# `unlearn eval`: scoring 3 models (MNIST/LeNet, 70,000 images each)",
            markdown_table(["scoring", "fastest (s)", "every repeat (s)"], rows),
            f"Speed-up of now over first: {best['first'] / best['now']:.2f}x; over shared: "
            f"{best['shared'] / best['now']:.2f}x; over channels-last: "
            f"{best['channels-last'] / best['now']:.2f}x. Largest metric difference between the "
            f"scorings: {max(same.values()):.2g} (float rounding only).",
            f"## The whole command, against {args.against} (a fresh process each time)",
            markdown_table(["code", "fastest (s)", "median (s)", "every repeat (s)"], command_rows),
            f"Speed-up: {command['speedup_fastest']:.2f}x fastest to fastest, "
            f"{command['speedup_median']:.2f}x median to median (issue 22's target: under half "
            "of the time, 2x).",
        ]
    )
    write_results(
        "eval",
        {
            "repeats": args.repeats,
            "seconds": seconds,
            "fastest": best,
            "speedup_over_first": best["first"] / best["now"],
            "speedup_over_shared": best["shared"] / best["now"],
            "speedup_over_channels_last": best["channels-last"] / best["now"],
            "metric_differences": same,
            "whole_command": command,
        },
        md,
    )


if __name__ == "__main__":
    main()
