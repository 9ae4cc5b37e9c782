"""`eval --reference`: what forgetting should look like (typically a `retrain` version of
this run or another), and the gaps to it."""

from __future__ import annotations

import numpy as np

from unlearn_cli.errors import InvalidParameterError, RunError
from unlearn_cli.ledger import ledger_state
from unlearn_cli.location import location
from unlearn_cli.metrics import average_gap, js_divergence, weight_distance
from unlearn_cli.rundir import Run


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


def training_seconds(run: Run, version: int) -> float | None:
    """What producing `version` from scratch took: training, or a retrain's receipt."""
    receipt = run.receipt(version)
    details = receipt.get("details") or {}
    return receipt.get("train_seconds") or details.get("train_seconds") or None


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
