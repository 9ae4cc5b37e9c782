"""Why replay leaves a backdoor that retrain removes: the poisoned request, taken apart.

MNIST/LeNet on 10,000 images for 10 epochs at batch 32 (SGD, momentum 0.9), with 1% of the
images carrying the trigger of the report's poisoned request (`corrective.py`): the request
forgets them by id; its metric is the attack success rate (ASR) on patched test images.
Side by side in one run:

- `retrain`, the exact reference;
- `replay` on `train`'s default record (keep 0.2, depth, float16) and on a dense float32
  record: what pruning leaves in place;
- `amnesiac` on the dense record: the affected steps' updates subtracted, nothing re-run;
- the affected steps' *gradients* subtracted with the weight momentum gave them in every
  later step, c_s = (1 - mu^(T - s)) / (1 - mu), recovered from the dense record as
  c_s (delta_s - mu delta_(s-1)) (the recorded update of step s is -lr times the momentum
  buffer, which also carries earlier steps' gradients and lacks this step's later share);
  alone, and with the affected batches re-run without the poisoned samples;
- only the poisoned samples' share of each affected step's gradient, computed at that
  step's weights (replayed from theta_0 with the dense record), subtracted with and
  without the momentum weight c_s.

    python benchmarks/bench_poison_replay.py     # about 3 minutes on 2 cores

Writes results/poison_replay.json and .md.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import corrective
import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS, data_root, machine, markdown_table
from quality import raw_arrays

from unlearn_cli.methods.support import subtract_flat
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.predict import predict_logits
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.store.base import MISSING_INDEX
from unlearn_cli.train_config import TrainConfig

N_TRAIN, EPOCHS, SEED = 10_000, 10, 0
DENSE = RecordConfig(keep=1.0, delta_dtype="float32")


def test_accuracy(run: Run, model: torch.nn.Module) -> float:
    data = run.load_dataset()
    return float((predict_logits(model, data.x_test).argmax(1) == data.y_test).float().mean())


def dense_rows(run: Run, steps: np.ndarray) -> dict[int, torch.Tensor]:
    store, out = run.store(), {}
    for part, idx, val in store.iter_rows(steps):
        for i, s in enumerate(part.tolist()):
            row = torch.zeros(store.layout.num_params, dtype=torch.float64)
            used = idx[i] != MISSING_INDEX  # format 3: columns a row left unused
            row[torch.from_numpy(idx[i][used].astype(np.int64))] = val[i][used].double()
            out[s] = row
    return out


def momentum_weight(s: int, total: int, mu: float) -> float:
    return (1 - mu ** (total - s)) / (1 - mu)


def gradient_removal(run: Run, affected: np.ndarray, mu: float) -> torch.Tensor:
    """sum over affected s of c_s (delta_s - mu delta_(s-1)): each affected step's gradient
    with every later step's share of it (the update it appears in is -lr * momentum)."""
    total = run.store().info().committed_steps
    rows = dense_rows(run, np.union1d(affected, affected[affected > 0] - 1))
    out = torch.zeros_like(next(iter(rows.values())))
    for s in affected.tolist():
        previous = rows[s - 1] if s > 0 else 0.0
        out += momentum_weight(s, total, mu) * (rows[s] - mu * previous)
    return out.float()


def share_removal(run: Run, ids: np.ndarray, lr: float, mu: float, weighted: bool):
    """The poisoned samples' share of each affected step's gradient at that step's weights
    (theta_0 plus the dense record up to it), as the displacement it caused (to subtract)."""
    store, data = run.store(), run.load_dataset()
    index, layout = store.index(), store.layout
    total = store.info().committed_steps
    affected = set(store.steps_touching(ids).tolist())
    model = run.new_model()
    model.load_state_dict(run.load_state(None))
    model.train()
    params = dict(model.named_parameters())
    removal = torch.zeros(layout.num_params, dtype=torch.float64)
    for part, idx, val in store.iter_rows(np.arange(total)):
        for i, s in enumerate(part.tolist()):
            if s in affected:
                batch = index.batch(s).astype(np.int64)
                poisoned = batch[np.isin(batch, ids)]
                model.zero_grad()
                loss = F.cross_entropy(model(data.x_train[poisoned]), data.y_train[poisoned],
                                       reduction="sum") / len(batch)  # fmt: skip
                loss.backward()
                grad = torch.cat([params[ly.name].grad.reshape(-1) for ly in layout.layers])
                c = momentum_weight(s, total, mu) if weighted else 1.0
                removal -= c * lr * grad.double()  # the displacement it caused
            row = torch.zeros(layout.num_params)
            row[torch.from_numpy(idx[i].astype(np.int64))] = val[i]
            with torch.no_grad():
                for ly in layout.layers:
                    params[ly.name] += row[ly.offset : ly.offset + ly.numel].view(ly.shape)
    return removal.float()


def rerun_affected(run: Run, model: torch.nn.Module, ids: np.ndarray, lr: float) -> None:
    """Plain SGD at the run's learning rate on each affected batch without the poisoned."""
    store, data = run.store(), run.load_dataset()
    index = store.index()
    model.train()
    for s in store.steps_touching(ids).tolist():
        batch = index.batch(s).astype(np.int64)
        kept = batch[~np.isin(batch, ids)]
        if kept.size == 0:
            continue
        model.zero_grad()
        F.cross_entropy(model(data.x_train[kept]), data.y_train[kept]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    model.eval()


def main() -> None:
    raw = raw_arrays("mnist", data_root())
    raw = {**raw, "x_train": raw["x_train"][:N_TRAIN], "y_train": raw["y_train"][:N_TRAIN]}
    arrays, ids = corrective.corrupt(raw, "poisoned", SEED)
    work = Path(tempfile.mkdtemp(prefix="poison-replay-"))
    np.savez(work / "poisoned.npz", **arrays)
    config = TrainConfig(dataset=f"npz:{work / 'poisoned.npz'}", epochs=EPOCHS, seed=SEED)
    runs = {}
    for name, record in (("default", RecordConfig()), ("dense", DENSE)):
        runs[name] = work / name
        train_run(config, record, runs[name])
    request = ForgetRequest(ids=tuple(ids.tolist()))
    rows = []

    def row(label: str, run: Run, model: torch.nn.Module, seconds: float) -> None:
        asr = corrective.attack_success(model, run, raw["x_test"], raw["y_test"])
        rows.append({"variant": label, "asr": asr, "test_acc": test_accuracy(run, model),
                     "seconds": round(seconds, 2)})  # fmt: skip
        print(rows[-1], flush=True)

    dense = Run.open(runs["dense"])
    row("original", dense, dense.load_model(0), 0.0)
    for label, name, method in (
        ("retrain", "dense", "retrain"),
        ("replay, default record", "default", "replay"),
        ("replay, dense record", "dense", "replay"),
        ("amnesiac, dense record (no re-run)", "dense", "amnesiac"),
    ):
        start = time.perf_counter()
        forgot = forget_run(runs[name], ForgetConfig(method, {}, from_version=0, guard=False),
                            request)  # fmt: skip
        run = Run.open(runs[name])
        row(label, run, run.load_model(forgot["version"]), time.perf_counter() - start)
    affected = dense.store().steps_touching(ids)
    lr, mu = config.lr, config.momentum
    for label, rerun in (("gradients x momentum weight", False),
                         ("gradients x momentum weight, then re-run", True)):  # fmt: skip
        start = time.perf_counter()
        model = dense.load_model(0)
        subtract_flat(model, dense.store().layout, gradient_removal(dense, affected, mu))
        if rerun:
            rerun_affected(dense, model, ids, lr)
        row(label, dense, model, time.perf_counter() - start)
    for label, weighted in (("poisoned share at theta_s x momentum weight", True),
                            ("poisoned share at theta_s", False)):  # fmt: skip
        start = time.perf_counter()
        model = dense.load_model(0)
        subtract_flat(model, dense.store().layout, share_removal(dense, ids, lr, mu, weighted))
        row(label, dense, model, time.perf_counter() - start)
    share = affected.size / dense.store().info().committed_steps
    payload = {"benchmark": "poison_replay", "machine": machine(), "n_train": N_TRAIN,
               "epochs": EPOCHS, "poisoned": int(ids.size), "affected_share": share,
               "rows": rows}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "poison_replay.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = [
        "# The poisoned request, taken apart (`bench_poison_replay.py`)\n",
        f"{payload['machine']['date']} · MNIST/LeNet, {N_TRAIN:,} images, {EPOCHS} epochs, "
        f"batch 32, SGD momentum 0.9; {ids.size} poisoned images (trigger, label 0) in "
        f"{100 * share:.1f}% of the steps. ASR: patched test images of the other classes "
        "called 0.\n",
        markdown_table(
            ["variant", "ASR %", "test %", "s"],
            [
                [
                    r["variant"],
                    f"{100 * r['asr']:.1f}",
                    f"{100 * r['test_acc']:.2f}",
                    f"{r['seconds']:.1f}",
                ]
                for r in rows
            ],
        ),  # fmt: skip
    ]
    (RESULTS / "poison_replay.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
