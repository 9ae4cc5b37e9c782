"""`unlearn retire RUN N --why ...`: set a version and its descendants aside, keeping them.

Nothing is deleted. The default `--from` of later commands becomes the newest live
version; what the retired versions forgot stays owed (`lineage.pending_ids`) and the
next request from a live version removes it too.
"""

from __future__ import annotations

from pathlib import Path

from unlearn_cli.errors import InvalidParameterError, RequestError
from unlearn_cli.fileio import append_line
from unlearn_cli.lineage import RETIRED, lineage, pending_ids, retired_versions
from unlearn_cli.rundir import Run, now


def retire_run(run_path: Path, version: int, why: str) -> dict:
    """Retire `version` (and every version descending from it); returns what changed."""
    if not why.strip():
        raise InvalidParameterError(
            "retire needs a reason: --why says what was wrong with the version.",
            hint='e.g. --why "forgot a whole class with amnesiac; accuracy collapsed"',
        )
    run = Run.open(run_path)
    version = run.resolve_version(version)
    if version == 0:
        raise RequestError(
            "Version 0 is the trained model, the root of every version; it cannot be retired.",
            hint="train the run again with `unlearn train ... --force` to replace it",
        )
    if version in retired_versions(run):
        raise RequestError(f"Version {version} of {run.path} is already retired.")
    with run.lock():
        entry = {"version": version, "why": why.strip(), "created": now()}
        append_line(run.path / RETIRED, entry)
    retired = sorted(retired_versions(run))
    live = run.resolve_version(None)
    return {
        "run": str(run.path),
        "retired": [v for v in retired if version in lineage(run, v)],
        "why": entry["why"],
        "created": entry["created"],
        "all_retired": retired,
        "default_from": live,
        "pending_ids": pending_ids(run, live).tolist(),
    }
