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
from unlearn_cli.errors import InvalidParameterError, RequestError
from unlearn_cli.evidence import (
    ALPHA,
    PER_EXAMPLE_VARIANCE,
    OutModels,
    attack_summary,
    confidence_logit,
)
from unlearn_cli.ledger import ledger_state, retained_ids
from unlearn_cli.metrics import (
    MIA_SAMPLES,
    apply_gates,
    check_gates,
    class_accuracy,
    loss_auc,
    member_rate,
    sample_features,
)
from unlearn_cli.ops.evidence import (
    check_alpha,
    check_max_residual,
    eval_evidence,
    residual_gate,
    unverified,
    why_unverifiable,
)
from unlearn_cli.ops.pruned import pruned_state
from unlearn_cli.ops.reference import add_reference, parse_reference
from unlearn_cli.predict import predict_logits
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.pruning import mask_overlap, sparsity
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.shadows import (
    ShadowEvidence,
    Shadows,
    check_count,
    ensure_shadows,
    read_shadows,
)

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


def add_lira(scored: Scored, data: Dataset, split: Split, out: OutModels) -> None:
    """The likelihood-ratio attack's AUC and TPRs, the forget set against every test sample
    (the per-sample score of `evidence.py`)."""
    test = np.arange(len(data.y_test))
    forget = out.scores(
        confidence_logit(scored.forget_logits, data.y_train[split.forget]), split.forget.numpy()
    )
    held = out.scores(confidence_logit(scored.test_logits, data.y_test), data.n_train + test)
    summary = attack_summary(forget, held)
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
    alpha: float = ALPHA,
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Score a version (and the original, its parent and a reference) on its forget set.

    Where the run has shadow models (or `shadows` K asks for them: trained once, kept in
    the run), also the per-example evidence and the likelihood-ratio attack's AUC. Returns
    the JSON document and, per model, the losses of forget and test samples (for the plot).
    """
    if shadows is not None:
        check_count(shadows)
    check_alpha(alpha)
    gates = dict(gates or {})
    max_residual = gates.pop("max_residual", None)
    check_max_residual(max_residual)
    run = Run.open(run_path)
    version = run.resolve_version(version)
    ref = parse_reference(reference, run) if reference is not None else None
    for opened in (run, ref[0] if ref else None):
        if opened is not None and cache is not None:
            opened.cache = cache
    no_evidence = None if shadows is not None else why_unverifiable(run)
    asked = check_gates(gates, ref is not None, no_evidence is None)
    if max_residual is not None and no_evidence is not None:
        raise InvalidParameterError(
            "--max-residual gates the per-example evidence, which needs shadow models "
            f"({no_evidence}).",
            hint="add --shadows K (e.g. 8), or build them first with `unlearn shadows RUN -k 8`",
        )
    data = run.load_dataset(data_root, download)
    ids, source = forget_ids_for(run, version, request, lambda: data)
    seed = int(run.meta["config"]["seed"])
    split = make_split(ids, data.n_train, seed)
    models = {"version": run.load_model(version)}
    if version != 0:
        models["original"] = run.load_model(0)
    parent = run.receipt(version).get("parent")
    if ref is not None:
        models["reference"] = ref[0].load_model(ref[1])
    progress = progress or NullProgress()
    scored = score_models(models, data, split, seed, progress)
    fitted = None
    if no_evidence is None:
        fitted = ensure_shadows(run, data, shadows, progress) if shadows else read_shadows(run)
    result = base_document(run, version, ids, source, data, scored)
    result["lira"] = None
    if fitted is not None:
        out = OutModels.fit(fitted.phi, fitted.member)
        for one in scored.values():
            add_lira(one, data, split, out)
        result["lira"] = lira_section(fitted, len(fitted.phi), len(data.y_test))
        evidence = ShadowEvidence(out, data, len(fitted.phi), alpha)
        result["evidence"] = eval_evidence(run, evidence, ids, models, parent, ref)
    else:
        result["evidence"] = unverified(no_evidence or "no shadow models")
    if ref is not None:
        add_reference(result, ref, ids, scored, models)
    add_sparsity(result, run, version, ref)
    add_gates(result, asked, max_residual)
    losses = {k: (v.forget_loss, v.test_loss) for k, v in scored.items()}
    return result, losses


def add_gates(result: dict, asked: dict, max_residual: float | None) -> None:
    """The gates' verdicts (the metrics' and the evidence's) and whether all passed."""
    result["gates"] = apply_gates(result, asked)
    verdict = result["evidence"].get("verdicts", {}).get("version")
    gate = residual_gate(verdict, max_residual)
    if gate is not None:
        result["gates"].append(gate)
    result["passed"] = all(g["passed"] for g in result["gates"])
    result["evidence"].pop("verdicts", None)


def score_models(
    models: dict[str, nn.Module], data: Dataset, split: Split, seed: int, progress: Progress
) -> dict[str, Scored]:
    progress.start(len(models), f"eval: scoring {len(models)} models")
    scored = {}
    for key, model in models.items():
        scored[key] = score_model(model, data, split, seed)
        progress.advance(1, {})
    progress.stop()
    return scored


def lira_section(fitted: Shadows, k: int, held_out: int) -> dict[str, Any]:
    return {
        "shadows": k,
        "trained_now": fitted.trained,
        "shadow_train_seconds": round(fitted.seconds, 3),
        "variance": "per-example" if k >= PER_EXAMPLE_VARIANCE else "pooled",
        "held_out": held_out,
    }


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
