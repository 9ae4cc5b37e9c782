"""`unlearn log`: every version of a run, what made it, and what stays owed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn_cli.lineage import lineage, pending_ids, retired_versions, retirements
from unlearn_cli.rundir import Run, model_hash


def run_log(run_path: Path) -> dict[str, Any]:
    run = Run.open(run_path)
    retired = retired_versions(run)
    reasons = {r["version"]: r["why"] for r in retirements(run)}
    versions = []
    for version in run.versions():
        receipt = run.receipt(version)
        steps, ids = receipt.get("steps"), receipt.get("ids") or {}
        steps = steps if isinstance(steps, dict) else {}  # train receipts hold a step count
        why = next((reasons[v] for v in lineage(run, version) if v in reasons), None)
        versions.append(
            {
                "version": version,
                "parent": receipt.get("parent"),
                "kind": receipt.get("kind", "train"),
                "method": receipt.get("method", "train"),
                "created": receipt.get("created"),
                "request": receipt.get("request"),
                "newly_forgotten": len(ids.get("newly_forgotten", [])),
                "affected_share": steps.get("affected_share"),
                "model_hash": model_hash(receipt),
                "retired": version in retired,
                "retired_why": why if version in retired else None,
                "evidence": evidence_state(receipt),
            }
        )
    live = run.resolve_version(None)
    return {
        "run": str(run.path),
        "versions": versions,
        "default_from": live,
        "pending_ids": pending_ids(run, live).tolist(),
    }


def evidence_state(receipt: dict) -> str | None:
    """What the version's receipt says of its request: "forgotten" or "flagged" by the
    per-example evidence, "unverified" without it, None for the trained version (or a
    receipt older than the evidence)."""
    evidence = receipt.get("evidence")
    if not isinstance(evidence, dict):
        return None
    if not evidence.get("verified"):
        return "unverified"
    return "forgotten" if evidence.get("forgotten") else "flagged"
