"""Versions' lineage and retirement: which versions are live, and what stays owed.

`unlearn retire RUN N --why ...` appends a line to `RUN/retired.jsonl`; version N and
every version descending from it are retired. They stay on disk for audit, but no
command starts from them by default, and `forget --from` refuses them. Erasure
obligations never regress: the ids a retired version forgot are *pending* for every
live version that has not forgotten them, and the next request from such a version
includes them (the receipt lists them under `ids.pending_included`).

The same walk finds the layer covariances a `pgu` version projects against
(`find_covariance`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from unlearn_cli.errors import RunError, StoreError
from unlearn_cli.fileio import read_lines
from unlearn_cli.ledger import ledger_state
from unlearn_cli.store.covariance import (
    COMPUTE_HINT,
    COVARIANCE_NAME,
    CovarianceState,
    live_path,
    read_attrs,
    read_covariance,
)

if TYPE_CHECKING:
    from pathlib import Path

    from unlearn_cli.rundir import Run

RETIRED = "retired.jsonl"


def lineage(run: Run, version: int) -> list[int]:
    """`version`, its parent, ..., 0."""
    chain: list[int] = []
    v: int | None = version
    while v is not None and v not in chain:
        chain.append(v)
        v = ledger_state(run.version_dir(v)).parent if v > 0 else None
    return chain


def retirements(run: Run) -> list[dict]:
    """The lines of `retired.jsonl` (a torn last line from a kill is ignored)."""
    out = []
    for line in read_lines(run.path / RETIRED) or []:
        try:
            entry = json.loads(line)
            out.append({**entry, "version": int(entry["version"])})
        except (ValueError, KeyError, TypeError):
            continue
    return out


def retired_versions(run: Run) -> set[int]:
    """Every retired version: the retired ones and all their descendants."""
    roots = {r["version"] for r in retirements(run)}
    if not roots:
        return set()
    return {v for v in run.versions() if roots.intersection(lineage(run, v))}


def pending_ids(run: Run, version: int) -> np.ndarray:
    """Ids a retired version forgot that `version` still holds (sorted)."""
    retired = retired_versions(run)
    owed = [ledger_state(run.version_dir(v)).forgotten_ids for v in sorted(retired) if v > 0]
    if not owed:
        return np.empty(0, np.int64)
    mine = ledger_state(run.version_dir(version)).forgotten_ids
    return np.setdiff1d(np.unique(np.concatenate(owed)), mine)


def check_live(run: Run, version: int) -> None:
    if version in retired_versions(run):
        why = next(
            (r["why"] for r in retirements(run) if r["version"] in lineage(run, version)), ""
        )
        raise RunError(
            f"Version {version} of {run.path} is retired ({why}).",
            hint="start from a live version (the default), e.g. --from 0",
        )


def find_covariance(run: Run, version: int) -> tuple[Path, CovarianceState]:
    """The statistics `version` uses: its own (a pgu version), else the nearest
    ancestor's, else the run's if they were measured on one of its ancestors."""
    base = live_path(run.path / COVARIANCE_NAME)
    base_on = read_attrs(base)["computed_on"] if base.exists() else None
    chain = lineage(run, version)
    for v in chain:
        own = run.version_dir(v) / COVARIANCE_NAME
        path = own if own.exists() else base if v == base_on else None
        if path is None:
            continue
        state = read_covariance(path)
        if state.model_fingerprint != run.meta["model"]["fingerprint"]:
            raise StoreError(
                f"The covariance store {path} belongs to another model.",
                hint="measure it again with `unlearn covariance RUN --force`",
            )
        return path, state
    if base_on is None:
        raise StoreError(f"Run {run.path} has no layer covariances, which pgu needs.", COMPUTE_HINT)
    raise StoreError(
        f"The run's layer covariances were measured on version {base_on}, which version "
        f"{version} does not descend from (its lineage: {', '.join(map(str, chain))}).",
        hint=f"measure them for it: `unlearn covariance RUN --version {version} --force`",
    )
