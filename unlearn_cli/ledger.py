"""The ledger: which sample ids have been forgotten and which steps subtracted.

Its authoritative state lives inside each version folder (`versions/NNNN/ledger.json`,
cumulative along that version's lineage), so it is committed by the same rename
that commits the model: a request either lands whole or not at all. Version 0
has an empty ledger. `RUN/ledger.jsonl` is the append-only journal of every
applied request, for people and auditors; a line missing after a kill is
restored from the version's own ledger before the next request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unlearn_cli.errors import RunError
from unlearn_cli.fileio import append_line, check_format, read_json, read_lines

LEDGER_FORMAT = "unlearn-ledger"
LEDGER_FORMAT_VERSION = 1
JOURNAL = "ledger.jsonl"


def _ids(values) -> np.ndarray:
    return np.unique(np.asarray(values, dtype=np.int64))


def retained_ids(n_train: int, forgotten: np.ndarray) -> torch.Tensor:
    """The training ids not in `forgotten`, ascending (int64)."""
    keep = np.ones(n_train, dtype=bool)
    keep[np.asarray(forgotten, dtype=np.int64)] = False
    return torch.from_numpy(np.flatnonzero(keep))


@dataclass(frozen=True)
class LedgerState:
    """Cumulative state of one version."""

    forgotten_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    subtracted_steps: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    # False once a method rebuilt the model without the recorded trajectory (retrain).
    store_applies: bool = True
    parent: int | None = None
    requests: int = 0
    # Steps a `replay` re-ran without the forgotten ids: step -> the version whose
    # `replay.zarr` holds its new record, which later requests subtract instead.
    replayed: dict[int, int] = field(default_factory=dict)

    def after(
        self,
        version_from: int,
        new_ids: np.ndarray,
        new_steps: np.ndarray,
        keeps_trajectory: bool,
        replayed_in: tuple[np.ndarray, int] | None = None,
    ) -> LedgerState:
        """The next version's state. `new_steps` had their current record subtracted (the
        original, or a replay's); `replayed_in` = (steps, version) re-recorded by a replay."""
        replayed = {s: v for s, v in self.replayed.items() if s not in set(new_steps.tolist())}
        if replayed_in is not None:
            steps, version = replayed_in
            replayed |= dict.fromkeys(steps.tolist(), version)
        return LedgerState(
            _ids(np.concatenate([self.forgotten_ids, new_ids])),
            _ids(np.concatenate([self.subtracted_steps, new_steps])),
            self.store_applies and keeps_trajectory,
            version_from,
            self.requests + 1,
            replayed,
        )

    def kept_by(self, version: int) -> LedgerState:
        """The same obligations, as inherited by a version made from `version` that forgot
        nothing new (a pruned version)."""
        return LedgerState(
            self.forgotten_ids,
            self.subtracted_steps,
            self.store_applies,
            version,
            self.requests,
            dict(self.replayed),
        )

    def to_dict(self) -> dict:
        return {
            "format": LEDGER_FORMAT,
            "format_version": LEDGER_FORMAT_VERSION,
            "parent": self.parent,
            "requests": self.requests,
            "store_applies": self.store_applies,
            "forgotten_ids": self.forgotten_ids.tolist(),
            "subtracted_steps": self.subtracted_steps.tolist(),
            "replayed_steps": sorted(self.replayed),
            "replayed_in": [self.replayed[s] for s in sorted(self.replayed)],
        }

    @classmethod
    def from_dict(cls, d: dict, where: Path) -> LedgerState:
        check_format(
            d,
            LEDGER_FORMAT,
            (LEDGER_FORMAT_VERSION,),
            where,
            RunError,
            hint="forget from an earlier version with --from",
        )
        try:
            return cls(
                _ids(d["forgotten_ids"]),
                _ids(d["subtracted_steps"]),
                bool(d["store_applies"]),
                d["parent"],
                int(d["requests"]),
                # absent in ledgers written before replay existed
                {
                    int(s): int(v)
                    for s, v in zip(
                        d.get("replayed_steps", []), d.get("replayed_in", []), strict=True
                    )
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(
                f"{where} is damaged ({type(exc).__name__}: {exc}).",
                hint="forget from an earlier version with --from",
            ) from None


def ledger_state(version_dir: Path) -> LedgerState:
    """The ledger as of a version (empty for the trained model)."""
    path = version_dir / "ledger.json"
    if not path.exists():
        if version_dir.name.split("-")[0] == "0000":  # `0000`, or `0000-<token>` remotely
            return LedgerState()
        raise RunError(
            f"Version folder {version_dir} has no ledger.json.",
            hint="the version is damaged; forget from an earlier one with --from",
        )
    d = read_json(path, "ledger", hint="the version is damaged; forget from an earlier one")
    return LedgerState.from_dict(d, path)


def journal_entry(version: int, receipt: dict) -> dict:
    return {
        "version": version,
        "parent": receipt["parent"],
        "created": receipt["created"],
        "method": receipt["method"],
        "newly_forgotten_ids": receipt["ids"]["newly_forgotten"],
        "subtracted_steps": receipt["steps"]["subtracted"],
    }


def append_journal(run_path: Path, entry: dict) -> None:
    """Append one line durably; the journal is never rewritten."""
    append_line(run_path / JOURNAL, entry)


def journal_versions(run_path: Path) -> set[int]:
    seen = set()
    for line in read_lines(run_path / JOURNAL) or []:
        try:
            seen.add(int(json.loads(line)["version"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a kill mid-append; the version is re-added
    return seen
