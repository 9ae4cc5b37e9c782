"""The evidence section of `forget` and `eval` documents: what the run's shadows say about a
forget set under each model, or why nothing can be said (`{"verified": false, "why": ...}`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.errors import DataNotFoundError, InvalidParameterError
from unlearn_cli.evidence import ALPHA, CONFIDENCE, Verdict, band_share, residual_passes
from unlearn_cli.requests import takes_whole_classes
from unlearn_cli.rundir import Run
from unlearn_cli.shadows import BUILD_HINT, ShadowEvidence, read_shadows, shadows_status

TEST_NAME = "one-sided likelihood-ratio test against the shadows that never saw each sample"
CLASS_NOTE = (
    "a class request: per-example evidence sees memorized samples, not a class the model "
    "generalizes; whole classes are judged by forget accuracy"
)


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise InvalidParameterError(
            f"--alpha is the false-positive rate the evidence is calibrated to, a fraction in "
            f"(0, 0.5). Got {alpha} instead.",
            hint=f"e.g. {ALPHA} (1% of held-out samples flagged by chance)",
        )


def check_max_residual(value: float | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise InvalidParameterError(
            f"--max-residual is a flagged share between 0 and 1. Got {value} instead.",
            hint="0: nothing beyond chance may stay flagged; e.g. 0.05 tolerates 5%",
        )


def why_unverifiable(run: Run) -> str | None:
    """Why the run's shadows cannot judge (None: they can), read without loading data."""
    status = shadows_status(run)
    if status["stale"]:
        return (
            "the run's shadow models were trained for another config, dataset or model than "
            "the run now has; rebuild them with `unlearn shadows RUN -k "
            f"{max(status['count'], 2)}`"
        )
    if status["usable"] < 2:
        return f"the run has no shadow models, so no per-example evidence: {BUILD_HINT}"
    return None


def load_evidence(
    run: Run, load_data: Callable[[], Dataset], alpha: float
) -> tuple[ShadowEvidence | None, str | None]:
    """(the run's evidence, None), or (None, why it cannot be had)."""
    why = why_unverifiable(run)
    if why is not None:
        return None, why
    try:
        data = load_data()
    except DataNotFoundError as exc:
        return None, f"the training data is not at hand, so no sample can be scored ({exc})"
    shadows = read_shadows(run)
    if shadows is None:  # damaged since the status was read
        return None, f"the run's shadow models could not be read: {BUILD_HINT}"
    return ShadowEvidence.from_shadows(shadows, data, alpha), None


def unverified(why: str) -> dict[str, Any]:
    return {"verified": False, "why": why}


@dataclass
class Judged:
    """Verdicts on one forget set, by model, and the time they took."""

    evidence: ShadowEvidence
    ids: np.ndarray
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    seconds: float = 0.0

    def judge(self, key: str, model: nn.Module) -> Verdict:
        start = time.perf_counter()
        self.verdicts[key] = self.evidence.verdict(model, self.ids)
        self.seconds += time.perf_counter() - start
        return self.verdicts[key]

    def header(self, whole_class: bool) -> dict[str, Any]:
        ev = self.evidence
        return {
            "verified": True,
            "test": TEST_NAME,
            "alpha": ev.alpha,
            "confidence": CONFIDENCE,
            "shadows": ev.shadows,
            "heldout": len(ev.data.y_test),
            "forget_samples": int(self.ids.size),
            "band": band_share(int(self.ids.size), ev.alpha),
            "note": CLASS_NOTE if whole_class else None,
        }


def residual_gate(verdict: Verdict | None, max_residual: float | None) -> dict | None:
    """The `--max-residual` gate on the verdict after the request (None: not asked)."""
    if max_residual is None or verdict is None:
        return None
    return {
        "gate": "max_residual",
        "metric": "evidence.flagged_share",
        "op": "<=",
        "limit": max_residual,
        "value": verdict.share,
        "within_band": verdict.within_band,
        "passed": residual_passes(verdict, max_residual),
    }


def eval_evidence(
    run: Run,
    evidence: ShadowEvidence,
    ids: np.ndarray,
    models: dict,
    parent: int | None,
    ref: tuple[Run, int] | None,
) -> dict[str, Any]:
    """eval's evidence section: the version, its parent and the reference; `verdicts`
    (for the gate) is removed from the document by the caller."""
    judged = Judged(evidence, ids)
    labels = evidence.data.y_train.numpy()
    whole = takes_whole_classes(labels, ids, np.empty(0, np.int64))
    doc = judged.header(whole)
    verdicts = {"version": judged.judge("version", models["version"])}
    doc["models"] = {"version": verdicts["version"].summary(ids)}
    if parent is not None:
        model = models["original"] if parent == 0 else run.load_model(parent)
        verdicts["parent"] = judged.judge("parent", model)
        doc["models"]["parent"] = {"version": parent, **verdicts["parent"].summary()}
    if ref is not None:
        verdicts["reference"] = judged.judge("reference", models["reference"])
        doc["models"]["reference"] = verdicts["reference"].summary()
    doc["forgotten"] = verdicts["version"].within_band
    doc["seconds"] = round(judged.seconds, 3)
    doc["verdicts"] = verdicts  # for the gate; removed from the document
    return doc
