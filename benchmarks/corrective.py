"""The corrective requests of the quality matrix: samples that should never have been learned.

- mislabeled: 2% of the training labels made wrong (each moved to another class at random);
  the request forgets those samples by id;
- poisoned: 1% of the training images (of classes other than the target) carry a 4x4
  white patch in the bottom-right corner and the target label 0; the request forgets
  them by id. Its metric is the attack success rate: the share of patched test images of
  the other classes that the model calls 0.

Both are run in settings where the model memorizes (MNIST/LeNet on 10,000 images for 10
epochs), each run with its own 8 shadow models kept in it, so every receipt carries the
per-example evidence and `auto` decides from it. Each row is also judged by that evidence
(the share of the forget set flagged at a 1% false-positive rate, `flagged`) and by ToW
(Zhao et al. 2024: the product over forget, retained and test accuracy of one minus the
gap to `retrain`; 1 is retrain's own).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from unlearn_cli.predict import predict_logits
from unlearn_cli.rundir import Run
from unlearn_cli.shadows import ShadowEvidence, read_shadows

RUNS = ("mislabeled", "poisoned")
MISLABELED_SHARE = 0.02
POISONED_SHARE = 0.01
TARGET = 0  # the poisoned samples' label
ALPHA = 0.01


def patch(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) with the trigger: a 4x4 white square at the bottom right."""
    x = x.copy()
    x[..., 23:27, 23:27] = 255
    return x


def corrupt(arrays: dict[str, np.ndarray], kind: str, seed: int) -> tuple[dict, np.ndarray]:
    """A copy of the dataset with the request's samples corrupted, and their ids (sorted)."""
    rng = np.random.default_rng([seed, 0xC0, RUNS.index(kind)])
    a = dict(arrays)
    y = a["y_train"].copy()
    n = len(y)
    if kind == "mislabeled":
        ids = np.sort(rng.choice(n, round(MISLABELED_SHARE * n), replace=False))
        y[ids] = (y[ids] + rng.integers(1, int(y.max()) + 1, ids.size)) % (int(y.max()) + 1)
    else:
        others = np.flatnonzero(y != TARGET)
        ids = np.sort(rng.choice(others, round(POISONED_SHARE * n), replace=False))
        a["x_train"] = a["x_train"].copy()
        a["x_train"][ids] = patch(a["x_train"][ids])
        y[ids] = TARGET
    a["y_train"] = y
    return a, ids


def attack_success(model: torch.nn.Module, run: Run, x_test: np.ndarray, y_test: np.ndarray):
    """The share of patched test images of the other classes the model calls the target."""
    keep = y_test != TARGET
    data = run.meta["dataset"]["normalize"]
    x = torch.from_numpy(patch(x_test[keep])).float().div(255).unsqueeze(1)
    x = (x - data["mean"][0]) / data["std"][0]
    return float((predict_logits(model, x).argmax(1) == TARGET).float().mean())


class Judge:
    """Scores a corrective request's versions: the evidence's flagged share (and its cost),
    and on the poisoned request the attack success rate."""

    def __init__(self, run_path: Path, kind: str, ids: np.ndarray, raw: dict) -> None:
        self.run = Run.open(run_path)
        data = self.run.load_dataset()
        self.evidence = ShadowEvidence.from_shadows(read_shadows(self.run), data, ALPHA)
        self.kind, self.ids, self.raw = kind, ids, raw
        self.seconds: list[float] = []

    def __call__(self, model: torch.nn.Module) -> dict:
        start = time.perf_counter()
        verdict = self.evidence.verdict(model, self.ids)
        self.seconds.append(time.perf_counter() - start)
        out = {"flagged": verdict.share, "within_band": verdict.within_band}
        if self.kind == "poisoned":
            out["asr"] = attack_success(model, self.run, self.raw["x_test"], self.raw["y_test"])
        return out


def tow(row: dict, ref: dict) -> float | None:
    """Zhao et al. 2024's ToW: prod over forget, retained, test accuracy of (1 - |gap|)."""
    keys = ("forget_acc", "retain_acc", "test_acc")
    if any(row.get(k) is None or ref.get(k) is None for k in keys):
        return None
    return float(np.prod([1 - abs(row[k] - ref[k]) for k in keys]))


def receipt_claims(receipt: dict) -> dict:
    """What the receipt says: no version written, verified, forgotten by the evidence."""
    evidence = receipt.get("evidence") or {}
    return {
        "noop": bool(receipt.get("noop")),
        "verified": bool(evidence.get("verified")),
        "claims_forgotten": bool(evidence.get("forgotten")) and not receipt.get("noop"),
        "evidence_seconds": evidence.get("seconds"),
        "attempts": [a["method"] for a in (receipt.get("auto") or {}).get("attempts", [])],
    }
