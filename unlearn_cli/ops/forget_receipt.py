"""What a `forget` document says: the receipt of a new version, or of a request that changed
nothing (`noop: true`, no version written), each with its evidence and gates."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from unlearn_cli.evidence import Verdict
from unlearn_cli.methods import ForgetContext, ForgetOutcome, Method
from unlearn_cli.ops.evidence import residual_gate, unverified
from unlearn_cli.ops.forget_request import PreparedRequest
from unlearn_cli.requests import takes_whole_classes
from unlearn_cli.rundir import model_hash

# The README's "Which method when" for a class or samples spread over most batches.
SUITED_FOR_HEAVY = (
    "optimize -p partial=true or label-flip -p partial=true (retrain for exact removal)"
)


@dataclass
class Attempt:
    """One method run on a private copy of the starting version's model."""

    method: Method
    params: Any
    ctx: ForgetContext
    outcome: ForgetOutcome
    seconds: float
    unchanged: str | None  # why the model came out as it went in (None: it changed)
    after: Verdict | None  # the evidence on the result (None: no evidence)
    hash_before: str  # the starting model's hash

    def describe(self, accepted: bool, why: str) -> dict[str, Any]:
        """The attempt as `auto`'s receipt lists it: method, cost, result and verdict."""
        return {
            "method": self.method.name,
            "params": asdict(self.params),
            "seconds": round(self.seconds, 4),
            "bytes_read": self.outcome.bytes_read,
            "steps": self.outcome.details.get("steps", self.outcome.details.get("steps_replayed")),
            "unchanged": self.unchanged,
            "flagged_share": None if self.after is None else self.after.share,
            "within_band": None if self.after is None else self.after.within_band,
            "accepted": accepted,
            "why": why,
        }


def receipt_header(
    prep: PreparedRequest, method: Method, params: Any, seed: int | None, choice: dict | None
) -> dict[str, Any]:
    """What a forget document says about the request and the method, done or not."""
    unprune = prep.config.unprune
    return {
        "kind": "forget",
        "parent": prep.version,
        "method": method.name,
        "auto": choice,
        "params": asdict(params),
        "unprune": None if unprune is None else asdict(unprune),
        "seed": seed,
        "request": {**prep.request.describe(prep.run.samples()), "class_indices": prep.classes},
    }


def recorded_steps(prep: PreparedRequest) -> int:
    """The steps of the run's training: the store's committed rows, or run.json's count."""
    store = prep.store
    return int(store.info().committed_steps if store is not None else prep.run.meta["steps"])


def ids_section(prep: PreparedRequest, newly: np.ndarray) -> dict[str, Any]:
    return {
        "requested": int(prep.ids.size),
        "newly_forgotten": newly.tolist(),
        "already_forgotten": prep.already.tolist(),
        "pending_included": prep.pending.tolist(),
    }


def forget_receipt(prep: PreparedRequest, attempt: Attempt, choice: dict | None) -> dict:
    """The receipt of the version `attempt` produced (before `write_version` stamps it)."""
    ctx, outcome, store = attempt.ctx, attempt.outcome, prep.store
    affected = ctx.affected_steps if store is not None else None
    total = recorded_steps(prep)
    return {
        **receipt_header(prep, attempt.method, attempt.params, ctx.seed, choice),
        "ids": ids_section(prep, ctx.forget_ids),
        "steps": {
            "total": int(total),
            "affected": None if affected is None else int(affected.size),
            "affected_share": None if affected is None else affected.size / max(1, total),
            "subtracted": outcome.subtracted_steps.tolist(),
            "already_subtracted": (
                0
                if affected is None
                else int(np.isin(affected, prep.ledger.subtracted_steps).sum())
            ),
        },
        "bytes_read": outcome.bytes_read,
        "wall_seconds": round(attempt.seconds, 4),
        "data_read": prep.load_data.cache_info().currsize > 0,  # type: ignore[attr-defined]
        "details": outcome.details,
        "evidence": evidence_section(prep, attempt.after),
    }


def evidence_section(prep: PreparedRequest, after: Verdict | None) -> dict[str, Any]:
    """Before and after, or why the request could not be judged."""
    judged = prep.judged
    if judged is None:
        return unverified(prep.unverified or "no evidence")
    labels = judged.evidence.data.y_train.numpy()
    whole = bool(prep.classes) or takes_whole_classes(labels, judged.ids, prep.ledger.forgotten_ids)
    before = judged.verdicts["before"]
    after = after or before
    return {
        **judged.header(whole),
        "before": {"version": prep.version, **before.summary()},
        "after": after.summary(judged.ids),
        "forgotten": after.within_band,
        "seconds": round(judged.seconds, 3),
    }


def noop_document(
    prep: PreparedRequest,
    reason: str,
    attempts: list[dict] | None = None,
    details: dict | None = None,
) -> dict[str, Any]:
    """A request that wrote no version: nothing new to forget, or every method it ran left
    the model as it was (so nothing was forgotten). The same top-level keys as any forget."""
    receipt = prep.run.receipt(prep.version)
    digest = model_hash(receipt)
    choice = None if prep.choice is None else {**prep.choice, "attempts": attempts or []}
    doc = {
        "noop": True,
        "noop_reason": reason,
        "version": prep.version,
        "created": None,
        **receipt_header(prep, prep.method, prep.params, prep.config.seed, choice),
        "ids": ids_section(prep, np.empty(0, np.int64)),
        "steps": {
            "total": recorded_steps(prep),
            "affected": 0,
            "affected_share": 0.0,
            "subtracted": [],
            "already_subtracted": 0,
        },
        "bytes_read": 0,
        "wall_seconds": round(sum(a["seconds"] for a in attempts or []), 4),
        "data_read": prep.load_data.cache_info().currsize > 0,  # type: ignore[attr-defined]
        "details": details or {},  # the last method's, when one ran
        "model_hash": digest,
        "model_hash_before": digest,
        "model_hash_after": digest,
        "evidence": evidence_section(prep, None),
    }
    warnings = [] if attempts is None else [f"no version written: {reason}"]
    return finish(prep, doc, prep.before, warnings)


def finish(
    prep: PreparedRequest,
    doc: dict,
    after: Verdict | None,
    warnings: list[str],
    exact: bool = False,
) -> dict[str, Any]:
    """The gates and warnings every forget document ends with."""
    gate = residual_gate(after, prep.config.max_residual)
    if prep.config.max_residual is not None and gate is None:
        warnings.append(
            f"--max-residual could not be checked: {doc['evidence'].get('why', 'no evidence')}"
        )
    doc["gates"] = [] if gate is None else [gate]
    doc["passed"] = gate is None or gate["passed"]
    if after is not None and not after.within_band:
        flagged = (
            f"the evidence still flags {after.count} of {after.n} samples as members "
            f"({after.share:.1%}, more than its {prep.config.alpha:g} false-positive rate explains)"
        )
        warnings.append(
            f"{flagged}; this version was retrained without them, so that is the test's own "
            "error (more shadows narrow it)"
            if exact
            else f"{flagged}: they are not verifiably forgotten; try -m replay or -m retrain"
        )
    # `warning` (the first) is kept for scripts written against schema 1 of this document.
    doc["warning"] = warnings[0] if warnings else None
    doc["warnings"] = warnings
    return doc


def heavy_warning(method: Method, receipt: dict) -> str | None:
    share = receipt["steps"]["affected_share"]
    if share is None or method.share_limit is None or share <= method.share_limit:
        return None
    return (
        f"{share:.0%} of all training steps held a requested sample: subtracting that many "
        f"updates removes much of what the model learned. Better suited: {SUITED_FOR_HEAVY}."
    )
