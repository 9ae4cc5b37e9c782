"""The seed paper's Figure 1 and Figure 4 analogues, on the rare-class protocol.

One LeNet run on MNIST keeping only the first 100 images of class 3, batch 64, with a
dense float32 record.

Figure 1: accuracy on the targeted data (the 100 class-3 training images) and on
retained data through training and the request. The training curve is replayed from
the record itself: the initial weights plus the recorded updates up to each checkpoint
(the replayed final model is checked against the trained one). At the request:
conventional amnesiac (the dense record of every affected step), then one epoch of
fine-tuning on retained data, against partial amnesiac (keep 0.2, depth, no fine-tuning).

Figure 4: test accuracy against the share of affected steps, for random requests of
growing size, conventional against partial (bench_forget.affected_sweep).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from bench_forget import RARE_CLASS, Scorer, affected_sweep, plot_sweep, rare_class_npz

from unlearn_cli.methods.support import subtract_flat
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.predict import accuracy
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store.base import MISSING_INDEX
from unlearn_cli.train_config import TrainConfig

PARTIAL = {"keep": 0.2, "schedule": "depth"}


def train_rare_run(work: Path, epochs: int) -> tuple[Path, dict]:
    work.mkdir(parents=True, exist_ok=True)
    npz = work / "mnist-rare3.npz"
    rare_class_npz(npz)
    config = TrainConfig(dataset=f"npz:{npz}", model="lenet", epochs=epochs, batch_size=64)
    run = work / "figures-rare3"
    summary = train_run(config, RecordConfig(keep=1.0, delta_dtype="float32"), run, force=True)
    return run, summary


def replay(run: Run, checkpoints: np.ndarray, evaluate) -> tuple[list[dict], float]:
    """Evaluate the model at each checkpoint step, rebuilt as init + recorded updates.

    Returns the points and the largest absolute difference between the replayed final
    weights and the trained ones.
    """
    store = run.store()
    layout = store.layout
    n_steps = store.info().committed_steps
    init = run.load_state(None)
    total = torch.zeros(layout.num_params, dtype=torch.float64)
    model = run.new_model()

    def at(step: int) -> dict:
        model.load_state_dict(init)
        subtract_flat(model, layout, -total.float())
        return {"step": step, **evaluate(model)}

    points, done = [at(0)], 0
    wanted = set(int(c) for c in checkpoints)
    for steps, indices, values in store.iter_rows(np.arange(n_steps)):
        for i, step in enumerate(steps):
            used = indices[i] != MISSING_INDEX  # format 3: columns a row left unused
            total.index_add_(
                0, torch.from_numpy(indices[i][used].astype(np.int64)), values[i][used].double()
            )
            done = int(step) + 1
            if done in wanted:
                points.append(at(done))
    trained = run.load_state(0)
    drift = max(float((model.state_dict()[k] - trained[k]).abs().max()) for k in trained)
    return points, drift


def figure1(run_path: Path, checkpoints: int) -> dict:
    run = Run.open(run_path)
    data = run.load_dataset()
    y = data.y_train.numpy()
    forget = np.flatnonzero(y == RARE_CLASS)
    retain = np.flatnonzero(y != RARE_CLASS)
    retain = np.sort(np.random.default_rng(0).choice(retain, 5000, replace=False))
    f, r = torch.from_numpy(forget), torch.from_numpy(retain)
    test3 = data.y_test == RARE_CLASS

    def evaluate(model) -> dict:
        return {
            "targeted": accuracy(model, data.x_train[f], data.y_train[f]),
            "retained": accuracy(model, data.x_train[r], data.y_train[r]),
            "test_class": accuracy(model, data.x_test[test3], data.y_test[test3]),
        }

    n_steps = int(run.meta["steps"])
    points, drift = replay(run, np.linspace(0, n_steps, checkpoints + 1)[1:].round(), evaluate)
    request = ForgetRequest(ids=tuple(forget.tolist()))
    after = {}
    for label, method, params in (
        ("conventional", "amnesiac", {}),
        ("conventional + 1 epoch fine-tune", "amnesiac", {"finetune_epochs": 1}),
        ("partial", "partial-amnesiac", PARTIAL),
        ("retrain", "retrain", {}),
    ):
        receipt = forget_run(run_path, ForgetConfig(method, params, from_version=0), request)
        after[label] = {
            "seconds": receipt["wall_seconds"],
            "affected_share": receipt.get("steps", {}).get("affected_share"),
            **evaluate(run.load_model(receipt["version"])),
        }
    steps_per_epoch = n_steps // int(run.meta["config"]["epochs"])
    return {
        "steps": n_steps,
        "steps_per_epoch": steps_per_epoch,
        "forget_size": int(forget.size),
        "trajectory": points,
        "replay_max_abs_error": drift,
        "after_request": after,
    }


def plot_figure1(fig: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n, epoch = fig["steps"], fig["steps_per_epoch"]
    traj = fig["trajectory"]
    x = [p["step"] / epoch for p in traj]
    after = fig["after_request"]
    panels = (
        ("conventional amnesiac", ["conventional", "conventional + 1 epoch fine-tune"]),
        ("partial amnesiac (keep 0.2, depth)", ["partial"]),
    )
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (title, labels) in zip(axes, panels, strict=True):
        for key, name, color in (
            ("targeted", "targeted (class-3 training images)", "tab:red"),
            ("retained", "retained training images", "tab:blue"),
        ):
            ax.plot(x, [100 * p[key] for p in traj], color=color, label=name)
            xs = [n / epoch] + [n / epoch + 0.15 + i for i in range(len(labels))]
            ys = [100 * traj[-1][key]] + [100 * after[lab][key] for lab in labels]
            ax.plot(xs, ys, "o--", color=color)
            ax.plot(xs[1], 100 * after["retrain"][key], "*", ms=12, color=color, mfc="none")
        ax.axvline(n / epoch, color="gray", ls=":")
        ax.text(n / epoch, 40, " request", color="gray")
        if len(labels) > 1:
            ax.text(n / epoch + 1.15, 8, "+1 epoch\nfine-tune", ha="center", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("epochs of training")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].plot([], [], "*", ms=12, color="gray", mfc="none", label="retrain (reference)")
    axes[0].legend(loc="center right", fontsize=8)
    figure.suptitle("LeNet / MNIST with 100 images of class 3: through training and the request")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def figure4(run_path: Path, sizes: list[int], path: Path) -> tuple[list[dict], bool]:
    data = Run.open(run_path).load_dataset()
    forget = np.flatnonzero(data.y_train.numpy() == RARE_CLASS)
    scorer = Scorer(run_path, forget)
    rows = affected_sweep(scorer, sizes, PARTIAL)
    original = accuracy(scorer.run.load_model(0), data.x_test, data.y_test)
    return rows, plot_sweep(rows, original, path)


def make_figures(work: Path, results: Path, suffix: str, quick: bool, threads: int) -> dict:
    """Both figures, as `run.py` runs them (in a worker process of `--jobs`, with `threads`
    torch threads): the numbers, whether each PNG was drawn, the training summary, seconds."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    run, train = train_rare_run(work, 1 if quick else 2)
    fig1 = figure1(run, 10 if quick else 24)
    png1 = results / f"figure1{suffix}.png"
    plotted1 = plot_figure1(fig1, png1)
    sizes = [10, 100, 1000] if quick else [3, 10, 30, 100, 300, 1000, 3000]
    png4 = results / f"figure4{suffix}.png"
    fig4, plotted4 = figure4(run, sizes, png4)
    return {
        "figure1": fig1,
        "png1": png1.name if plotted1 else None,
        "figure4": fig4,
        "png4": png4.name if plotted4 else None,
        "train": train,
        "seconds": time.perf_counter() - start,
    }
