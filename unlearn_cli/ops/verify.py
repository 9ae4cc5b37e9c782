"""`unlearn verify`: check a whole run, read-only, and list every problem found.

- θ0 and every version's model against the hashes run.json and the receipts hold;
- every committed row of the update store (each chunk's CRC-32C, positions in
  range and ascending, values finite), and the sample index (the inverse index
  must equal the one rebuilt from the forward one);
- every version's ledger: readable, its parent the receipt's parent, and never
  forgetting less than its parent; masks and covariance stores readable;
- the journal: every line parses and names a version that exists (a missing
  line is restored by the next request and is only noted);
- the shadow models, where there are any: every one the manifest counts reads whole
  (stale ones, trained for another config of the run, are only noted: they are
  rebuilt by the next `unlearn shadows`).

It reads every byte that matters, so its cost is one pass over the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_cli.errors import RunError, UnlearnError
from unlearn_cli.fileio import read_lines
from unlearn_cli.ledger import JOURNAL, ledger_state
from unlearn_cli.ops.pruned import pruned_state
from unlearn_cli.rundir import Run
from unlearn_cli.samples import SAMPLES_NAME
from unlearn_cli.shadows import FOLDER as SHADOWS
from unlearn_cli.shadows import damaged_shadows, shadows_status
from unlearn_cli.store import SampleIndex, UpdateStore
from unlearn_cli.store.base import count_entries
from unlearn_cli.store.covariance import COVARIANCE_NAME, read_covariance

MAX_DAMAGED = 20  # damaged store blocks listed at most (the rest are counted)


class Checks:
    """Collects (what, ok, detail) rows; a failing check never stops the others."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, what: str, check: Callable[[], str | None]) -> bool:
        try:
            detail = check() or ""
            ok = True
        except UnlearnError as exc:
            detail, ok = exc.message, False
        self.rows.append({"what": what, "ok": ok, "detail": detail})
        return ok

    def fail(self, what: str, detail: str) -> None:
        self.rows.append({"what": what, "ok": False, "detail": detail})


def verify_run(run_path: Path) -> dict[str, Any]:
    """The report: `ok`, and one row per check with what it found."""
    run = Run.open(run_path, require_complete=False)
    checks = Checks()
    checks.run("init.safetensors", lambda: _loads(run, None))
    if run.store_path.exists():
        check_store(run, checks)
    for version in run.versions():
        check_version(run, version, checks)
    check_journal(run, checks)
    if run.meta["dataset"].get("keys"):
        checks.run(SAMPLES_NAME, lambda: _sample_keys(run))
    base = run.path / COVARIANCE_NAME
    if base.exists():
        checks.run(COVARIANCE_NAME, lambda: _covariance(base))
    if (run.path / SHADOWS).exists():
        checks.run(SHADOWS, lambda: check_shadows(run))
    problems = [r for r in checks.rows if not r["ok"]]
    return {
        "run": str(run.path),
        "status": run.meta.get("status"),
        "ok": not problems,
        "problems": len(problems),
        "checks": checks.rows,
    }


def _loads(run: Run, version: int | None) -> str:
    state = run.load_state(version)  # checks names, shapes and the recorded hash
    return f"{len(state)} tensors, hash matches"


def _sample_keys(run: Run) -> str:
    keys = run.samples()
    if keys is None or keys.key_hash.shape != (run.n_train,):
        raise RunError(
            f"{SAMPLES_NAME} of {run.path} is missing or does not hold one key per "
            f"training sample ({run.n_train}).",
            hint=f"restore {SAMPLES_NAME} and secret.key from a backup",
        )
    subjects = "" if keys.subject_hash is None else ", with subjects"
    return f"{run.n_train} keyed hashes{subjects}"


def _covariance(path: Path) -> str:
    state = read_covariance(path)
    return f"{len(state.bases)} layers, {state.samples} samples"


def check_store(run: Run, checks: Checks) -> None:
    store: UpdateStore | None = None

    def opened() -> str:
        nonlocal store
        store = run.store(require_complete=False)
        info = store.info() if store is not None else None
        if info is None:
            return "no update store"
        state = "complete" if info.complete else "incomplete"
        return f"{info.committed_steps} of {info.planned_steps} steps committed ({state})"

    if not checks.run("deltas.zarr", opened) or store is None:
        return
    checks.run("deltas.zarr sample index", lambda: _index(store))
    _rows(store, checks)


def _index(store: UpdateStore) -> str:
    index = store.index()
    rebuilt = SampleIndex.from_forward(
        index.n_samples, index.epochs, index.batch_offsets, index.batch_ids
    )
    same = np.array_equal(rebuilt.sample_offsets, index.sample_offsets) and np.array_equal(
        rebuilt.sample_steps, index.sample_steps
    )
    if not same:
        raise UnlearnError("the inverse index (sample -> steps) disagrees with the batches")
    return f"{index.steps} steps, {int(index.batch_offsets[-1])} sample entries"


def _rows(store: UpdateStore, checks: Checks) -> None:
    """Read every committed row, a shard at a time, listing each damaged block."""
    info = store.info()
    block = int(info.extra.get("rows_per_shard", 256))
    damaged, read = [], 0
    try:
        counts = store.kept_counts()
    except Exception as exc:  # zarr raises many types for a damaged chunk
        counts = None
        damaged.append(f"the entry counts (index/counts) cannot be read: {exc}")
    for start in range(0, info.committed_steps, block):
        steps = np.arange(start, min(start + block, info.committed_steps))
        try:
            indices, _ = store.read_rows(steps)
            read += steps.size
        except UnlearnError as exc:
            damaged.append(exc.message)
            continue
        if counts is not None and not np.array_equal(
            count_entries(indices, info.layout), counts[steps]
        ):
            damaged.append(f"steps {steps[0]}-{steps[-1]} disagree with their entry counts")
    for message in damaged[:MAX_DAMAGED]:
        checks.fail("deltas.zarr rows", message)
    if len(damaged) > MAX_DAMAGED:
        checks.fail("deltas.zarr rows", f"... and {len(damaged) - MAX_DAMAGED} more blocks")
    if not damaged:
        checks.rows.append({"what": "deltas.zarr rows", "ok": True, "detail": f"{read} read"})


def check_version(run: Run, version: int, checks: Checks) -> None:
    name = f"version {version:04d}"
    if not checks.run(f"{name} model", lambda: _loads(run, version)):
        return
    folder = run.version_dir(version)
    if version > 0:
        checks.run(f"{name} ledger", lambda: _ledger(run, version))
    if (folder / "masks.safetensors").exists():
        checks.run(f"{name} masks", lambda: _masks(run, version))
    if (folder / COVARIANCE_NAME).exists():
        checks.run(f"{name} {COVARIANCE_NAME}", lambda: _covariance(folder / COVARIANCE_NAME))


def _ledger(run: Run, version: int) -> str:
    ledger = ledger_state(run.version_dir(version))
    receipt = run.receipt(version)
    if ledger.parent != receipt.get("parent"):
        raise UnlearnError(
            f"its ledger names parent {ledger.parent}, its receipt {receipt.get('parent')}"
        )
    if ledger.parent is not None and ledger.parent in run.versions():
        before = ledger_state(run.version_dir(ledger.parent)).forgotten_ids
        lost = np.setdiff1d(before, ledger.forgotten_ids)
        if lost.size:
            raise UnlearnError(
                f"it no longer lists {lost.size} ids its parent {ledger.parent} had forgotten "
                f"(e.g. {int(lost[0])})"
            )
    new = np.asarray((receipt.get("ids") or {}).get("newly_forgotten", []), dtype=np.int64)
    if not np.isin(new, ledger.forgotten_ids).all():
        raise UnlearnError("its receipt forgot ids its ledger does not list")
    return f"{ledger.forgotten_ids.size} ids forgotten, {ledger.subtracted_steps.size} steps"


def _masks(run: Run, version: int) -> str:
    state = pruned_state(run, version)
    return "" if state is None else f"sparsity {state.schedule.sparsity:g}"


def check_journal(run: Run, checks: Checks) -> None:
    import json

    lines = read_lines(run.path / JOURNAL)
    if lines is None:
        if run.versions()[1:]:
            checks.rows.append(
                {"what": JOURNAL, "ok": True, "detail": "missing (restored by the next request)"}
            )
        return
    versions, torn = set(), 0
    for number, line in enumerate(lines, 1):
        try:
            versions.add(int(json.loads(line)["version"]))
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                torn += 1  # a kill cut the last append short; harmless
                continue
            checks.fail(JOURNAL, f"line {number} is not a journal entry")
            return
    unknown = sorted(versions - set(run.versions()))
    if unknown:
        checks.fail(JOURNAL, f"names version {unknown[0]}, which is not in versions/")
        return
    missing = len(set(run.versions()[1:]) - versions)
    note = f"{len(versions)} entries" + (f", {missing} to restore" if missing else "")
    checks.rows.append(
        {"what": JOURNAL, "ok": True, "detail": note + (", torn last line" if torn else "")}
    )


def check_shadows(run: Run) -> str:
    status = shadows_status(run)
    if status["stale"]:
        return (
            f"{status['count']} stale (trained for another config of the run); "
            "`unlearn shadows RUN` builds new ones"
        )
    damaged = damaged_shadows(run, status["count"])
    if damaged:
        raise RunError(
            f"shadow model {damaged[0]} of {status['count']} is missing or damaged; "
            f"`unlearn shadows RUN -k {status['count']}` trains it again",
            hint=f"`unlearn shadows RUN -k {status['count']}` trains it again",
        )
    return f"{status['count']} shadow models, each read whole"
