"""`unlearn eval`: score a version, the original and a reference on the version's forget set.

The JSON document `evaluate` returns is an interface (README, "unlearn eval"):
keys are added, never renamed, and `schema` changes when one is. The metrics
themselves are pure functions in `metrics.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.errors import InvalidParameterError, RequestError, RunError
from unlearn_cli.ledger import ledger_state, retained_ids
from unlearn_cli.location import location
from unlearn_cli.metrics import (
    LIRA_PER_EXAMPLE_VARIANCE,
    MIA_SAMPLES,
    apply_gates,
    attack_summary,
    average_gap,
    check_gates,
    class_accuracy,
    confidence_logit,
    js_divergence,
    lira_scores,
    loss_auc,
    member_rate,
    sample_features,
    weight_distance,
)
from unlearn_cli.ops.pruned import pruned_state
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.pruning import mask_overlap, sparsity
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.shadows import Shadows, check_count, ensure_shadows
from unlearn_cli.training import predict_logits

SCHEMA = 1


@dataclass
class Split:
    forget: torch.Tensor
    retain: torch.Tensor
    mia_members: torch.Tensor  # a sample of retain, to fit the attack


@dataclass
class Scored:
    metrics: dict
    forget_logits: torch.Tensor
    test_logits: torch.Tensor
    forget_loss: np.ndarray
    test_loss: np.ndarray


def score_model(model: nn.Module, data: Dataset, split: Split, seed: int) -> Scored:
    x, y = data.x_train, data.y_train
    forget_logits = predict_logits(model, x[split.forget])
    retain_logits = predict_logits(model, x[split.retain])
    retain_pred = retain_logits.argmax(1)
    member_logits = subset_logits(retain_logits, split.retain, split.mia_members)
    if member_logits is None:
        member_logits = predict_logits(model, x[split.mia_members])
    test_logits = predict_logits(model, data.x_test)
    f_feat = sample_features(forget_logits, y[split.forget])
    t_feat = sample_features(test_logits, data.y_test)
    m_feat = sample_features(member_logits, y[split.mia_members])

    def acc(pred, labels):
        return float((pred == labels).float().mean()) if len(labels) else float("nan")

    forget_acc = acc(forget_logits.argmax(1), y[split.forget])
    metrics = {
        "forget_acc": forget_acc,
        "ua": 1 - forget_acc,
        "retain_acc": acc(retain_pred, y[split.retain]),
        "test_acc": acc(test_logits.argmax(1), data.y_test),
        "member_rate": member_rate(m_feat, t_feat, f_feat, seed),
        "loss_auc": loss_auc(f_feat[:, 0], t_feat[:, 0]),
        "test_acc_per_class": class_accuracy(test_logits.argmax(1), data.y_test, data.num_classes),
    }
    return Scored(metrics, forget_logits, test_logits, f_feat[:, 0], t_feat[:, 0])


def add_lira(scored: Scored, data: Dataset, split: Split, shadows: Shadows) -> None:
    """The likelihood-ratio attack on the forget set against every test sample."""
    pool = np.r_[split.forget.numpy(), data.n_train + np.arange(len(data.y_test))]
    phi = np.r_[
        confidence_logit(scored.forget_logits, data.y_train[split.forget]),
        confidence_logit(scored.test_logits, data.y_test),
    ]
    scores = lira_scores(phi, shadows.phi[:, pool], shadows.member[:, pool])
    n = len(split.forget)
    summary = attack_summary(scores[:n], scores[n:])
    scored.metrics.update({f"lira_{k}": v for k, v in summary.items()})


def subset_logits(
    logits: torch.Tensor, ids: torch.Tensor, subset: torch.Tensor
) -> torch.Tensor | None:
    """The rows of `logits` (one per sorted `ids`) for `subset`, when every id is among
    them: each sample is predicted once (the attack's members are retained samples)."""
    if len(ids) == 0:
        return None
    pos = torch.searchsorted(ids, subset).clamp_max(len(ids) - 1)
    return logits[pos] if bool((ids[pos] == subset).all()) else None


def parse_reference(text: str, run: Run) -> tuple[Run, int]:
    """`N` (a version of this run), `PATH` (another run's latest version) or `PATH@N`."""
    if text.isdigit():
        return run, run.resolve_version(int(text))
    path_text, _, version_text = text.rpartition("@") if "@" in text else (text, "", "")
    if version_text and not version_text.isdigit():
        raise InvalidParameterError(
            f"--reference must be a version number, a run directory, or RUN@VERSION. "
            f"Got '{text}' instead.",
            hint="e.g. --reference 2, or --reference runs/retrained@1",
        )
    ref = Run.open(location(path_text))
    version = ref.resolve_version(int(version_text) if version_text else None)
    for key, field, what in (
        ("dataset", "fingerprint", "dataset"),
        ("model", "architecture", "architecture"),
    ):
        if run.meta[key][field] != ref.meta[key][field]:
            raise RunError(
                f"Reference {ref.path} has a different {what} from run {run.path} "
                f"({ref.meta[key]['name']} against {run.meta[key]['name']}).",
                hint="compare with a version trained on the same data and model, "
                "e.g. one made by `unlearn forget --method retrain`",
            )
    return ref, version


def forget_ids_for(run: Run, version: int, request: ForgetRequest | None, load_data) -> tuple:
    """(ids, where they came from): the request's, else everything the version forgot."""
    if request is not None and request.given:
        ids, _ = request.resolve(run.n_train, load_data, run.sample_keys)
        return ids, "request"
    ids = ledger_state(run.version_dir(version)).forgotten_ids
    if ids.size == 0:
        raise RequestError(
            f"Version {version} of {run.path} has forgotten nothing, so there is no forget set "
            "to evaluate.",
            hint="name the samples with --ids, --ids-file or --class, or pick a version "
            "made by `unlearn forget` with --version",
        )
    return ids, "ledger"


def training_seconds(run: Run, version: int) -> float | None:
    """What producing `version` from scratch took: training, or a retrain's receipt."""
    receipt = run.receipt(version)
    details = receipt.get("details") or {}
    return receipt.get("train_seconds") or details.get("train_seconds") or None


def make_split(ids: np.ndarray, n_train: int, seed: int) -> Split:
    retain = retained_ids(n_train, ids)
    gen = torch.Generator().manual_seed(seed)
    members = retain[torch.randperm(len(retain), generator=gen)[:MIA_SAMPLES]]
    return Split(torch.from_numpy(ids), retain, members)


def evaluate(
    run_path: Path,
    version: int | None = None,
    reference: str | None = None,
    request: ForgetRequest | None = None,
    gates: dict[str, float | None] | None = None,
    data_root: Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
    cache: Path | None = None,
    shadows: int | None = None,
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Score a version (and the original, and a reference) on its forget set.

    With `shadows` K, also the likelihood-ratio attack from K shadow models (trained
    once and kept in the run, `shadows.py`). Returns the JSON document and, per model,
    the losses of forget and test samples (for the plot).
    """
    if shadows is not None:
        check_count(shadows)
    run = Run.open(run_path)
    version = run.resolve_version(version)
    ref = parse_reference(reference, run) if reference is not None else None
    for opened in (run, ref[0] if ref else None):
        if opened is not None and cache is not None:
            opened.cache = cache
    asked = check_gates(gates or {}, ref is not None, shadows is not None)
    data = run.load_dataset(data_root, download)
    ids, source = forget_ids_for(run, version, request, lambda: data)
    seed = int(run.meta["config"]["seed"])
    split = make_split(ids, data.n_train, seed)
    models = {"version": run.load_model(version)}
    if version != 0:
        models["original"] = run.load_model(0)
    if ref is not None:
        models["reference"] = ref[0].load_model(ref[1])
    progress = progress or NullProgress()
    progress.start(len(models), f"eval: scoring {len(models)} models")
    scored = {}
    for key, model in models.items():
        scored[key] = score_model(model, data, split, seed)
        progress.advance(1, {})
    progress.stop()
    lira = None
    if shadows is not None:
        fitted = ensure_shadows(run, data, shadows, progress)
        for one in scored.values():
            add_lira(one, data, split, fitted)
        lira = {
            "shadows": shadows,
            "trained_now": fitted.trained,
            "shadow_train_seconds": round(fitted.seconds, 3),
            "variance": "per-example" if shadows >= LIRA_PER_EXAMPLE_VARIANCE else "pooled",
            "held_out": len(data.y_test),
        }
    result = base_document(run, version, ids, source, data, scored)
    result["lira"] = lira
    if ref is not None:
        add_reference(result, ref, ids, scored, models)
    add_sparsity(result, run, version, ref)
    result["gates"] = apply_gates(result, asked)
    result["passed"] = all(g["passed"] for g in result["gates"])
    losses = {k: (v.forget_loss, v.test_loss) for k, v in scored.items()}
    return result, losses


def base_document(
    run: Run, version: int, ids: np.ndarray, source: str, data: Dataset, scored: dict
) -> dict[str, Any]:
    receipt = run.receipt(version)
    return {
        "schema": SCHEMA,
        "run": str(run.path),
        "version": version,
        "dataset": run.meta["dataset"]["name"],
        "model": run.meta["model"]["name"],
        "class_names": run.meta["dataset"]["class_names"],
        "forget_set": {
            "source": source,
            "size": int(ids.size),
            "classes": sorted({int(c) for c in data.y_train[torch.from_numpy(ids)].tolist()}),
        },
        "models": {k: v.metrics for k, v in scored.items()},
        "reference": None,
        "gap": None,
        "cost": {
            "method": receipt.get("method", "train"),
            "unlearn_seconds": receipt.get("wall_seconds"),
            "bytes_read": receipt.get("bytes_read"),
            "reference_seconds": None,
            "speedup": None,
        },
        "warnings": [],
    }


def add_reference(
    result: dict, ref: tuple[Run, int], ids: np.ndarray, scored: dict, models: dict
) -> None:
    """The gaps to the reference, its cost, and a warning when it forgot other samples."""
    ref_run, ref_version = ref
    result["reference"] = {"run": str(ref_run.path), "version": ref_version}
    ref_forgot = ledger_state(ref_run.version_dir(ref_version)).forgotten_ids
    if ref_version != 0 and not np.array_equal(ref_forgot, ids):
        result["warnings"].append(
            f"the reference (version {ref_version}) forgot {ref_forgot.size} samples, not "
            f"the {ids.size} of this forget set: the gaps compare different requests"
        )
    gap = average_gap(scored["version"].metrics, scored["reference"].metrics)
    if "lira_auc" in scored["version"].metrics:
        gap["lira_auc"] = abs(
            scored["version"].metrics["lira_auc"] - scored["reference"].metrics["lira_auc"]
        )
    gap["js_divergence"] = js_divergence(
        scored["version"].forget_logits, scored["reference"].forget_logits
    )
    gap["weight_distance"] = weight_distance(
        models["version"].state_dict(), models["reference"].state_dict()
    )
    result["gap"] = gap
    cost = result["cost"]
    cost["reference_seconds"] = training_seconds(ref_run, ref_version)
    if cost["reference_seconds"] and cost["unlearn_seconds"]:
        cost["speedup"] = cost["reference_seconds"] / cost["unlearn_seconds"]


def add_sparsity(result: dict, run: Run, version: int, ref: tuple[Run, int] | None) -> None:
    """Sparsity of pruned versions and, against a pruned reference, the masks' overlap
    (membership inference alone is unreliable for sparse models)."""
    mine = pruned_state(run, version)
    theirs = pruned_state(*ref) if ref is not None else None
    result["sparsity"] = {
        "version": sparsity(mine.masks) if mine else None,
        "reference": sparsity(theirs.masks) if theirs else None,
    }
    result["mask_overlap"] = mask_overlap(mine.masks, theirs.masks) if mine and theirs else None
