"""Deletion requests: sample ids, keys or data subjects (from the command line or a file),
or whole classes.

All of them resolve to sorted unique sample ids (positions in the training split). Keys and
subjects are looked up in the run's sample index (`samples.py`) by keyed hash, and a
request describes them only by those hashes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearn_cli.data import Dataset
from unlearn_cli.errors import RequestError
from unlearn_cli.samples import SampleKeys
from unlearn_cli.store import check_sample_ids


@dataclass(frozen=True)
class ForgetRequest:
    """What the user asked to forget, before it is checked against a dataset."""

    ids: tuple[int, ...] = ()
    ids_file: Path | None = None
    classes: tuple[str, ...] = field(default=())
    keys: tuple[str, ...] = ()
    keys_file: Path | None = None
    subjects: tuple[str, ...] = ()
    subjects_file: Path | None = None

    def describe(self, index: SampleKeys | None = None) -> dict:
        """What was asked, for receipts: counts and paths, and keys and subjects only as the
        run's keyed hashes (never in clear)."""
        out: dict = {
            "ids": len(self.ids),
            "ids_file": str(self.ids_file) if self.ids_file else None,
            "classes": list(self.classes),
        }
        if index is not None and (self.keys or self.keys_file):
            out["key_hashes"] = sorted({index.hash(k) for k in self.all_keys()})
        if index is not None and (self.subjects or self.subjects_file):
            out["subject_hashes"] = sorted({index.hash(s) for s in self.all_subjects()})
        return out

    @property
    def given(self) -> bool:
        return bool(
            self.ids
            or self.ids_file is not None
            or self.classes
            or self.keys
            or self.keys_file is not None
            or self.subjects
            or self.subjects_file is not None
        )

    def check_given(self) -> None:
        if not self.given:
            raise RequestError(
                "The request names no samples.",
                hint="pass --ids 3,17,256, --ids-file FILE, --class 3, --keys, --subject",
            )

    def all_keys(self) -> list[str]:
        return [*self.keys, *(read_names_file(self.keys_file, "Keys") if self.keys_file else [])]

    def all_subjects(self) -> list[str]:
        extra = read_names_file(self.subjects_file, "Subjects") if self.subjects_file else []
        return [*self.subjects, *extra]

    def resolve(
        self,
        n_train: int,
        load_data: Callable[[], Dataset],
        index: Callable[[], SampleKeys] | None = None,
    ) -> tuple[np.ndarray, list[int]]:
        """(sorted unique sample ids, class indices). Data is loaded only for classes;
        `index` (the run's sample index) only for keys and subjects."""
        self.check_given()
        parts = [np.asarray(self.ids, dtype=np.int64)]
        if self.ids_file is not None:
            parts.append(read_ids_file(self.ids_file))
        if self.keys or self.keys_file or self.subjects or self.subjects_file:
            if index is None:
                raise RequestError("This command takes no --keys or --subject.")
            table = index()
            if self.keys or self.keys_file:
                parts.append(table.ids_for_keys(self.all_keys()))
            if self.subjects or self.subjects_file:
                parts.append(table.ids_for_subjects(self.all_subjects()))
        classes: list[int] = []
        if self.classes:
            data = load_data()
            classes = [class_index(c, data) for c in self.classes]
            parts.append(np.flatnonzero(np.isin(data.y_train.numpy(), classes)))
        ids = np.concatenate(parts)
        ids = check_sample_ids(ids, n_train)
        ids = np.unique(ids)
        if ids.size == 0:
            raise RequestError(
                "The request resolves to no samples"
                + (f" ({self.ids_file} is empty)." if self.ids_file else "."),
                hint="name at least one sample id or class",
            )
        return ids, sorted(set(classes))


def _integers(tokens: list[tuple[str, str]], hint: str) -> list[int]:
    """int(token) for each (where, token); the first that is not one names `where`."""
    try:
        return [int(token) for _, token in tokens]
    except ValueError:
        where, token = next((w, t) for w, t in tokens if not t.lstrip("+-").isdigit())
        raise RequestError(f"{where}: {token!r} is not an integer sample id.", hint=hint) from None


def parse_id_list(text: str) -> tuple[int, ...]:
    """'3,17,256' or '3 17 256' -> (3, 17, 256)."""
    tokens = [("--ids", t) for t in text.replace(",", " ").split()]
    return tuple(_integers(tokens, hint="--ids takes comma-separated integers, e.g. 3,17,256"))


def parse_name_list(text: str) -> tuple[str, ...]:
    """'a.png,b.png' -> ('a.png', 'b.png'); names are kept as given, without blanks."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def read_names_file(path: Path, what: str) -> list[str]:
    """One key or subject per line (blank lines skipped; a name may hold '#')."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"{what} file not found: {path}.", hint="check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise RequestError(f"{what} file {path} is not readable UTF-8 text ({exc}).") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise RequestError(f"{what} file {path} is empty.", hint="write one name per line")
    return names


def read_ids_file(path: Path) -> np.ndarray:
    """One id per line (blank lines and # comments skipped), a .npy array, or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"Ids file not found: {path}.", hint="check the --ids-file path")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise RequestError(f"Ids file {path} is not a readable .npy array: {exc}.") from None
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise RequestError(
                f"Ids file {path} holds {arr.dtype} values; sample ids must be integers."
            )
        return arr.astype(np.int64).reshape(-1)
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"Ids file {path} is not valid JSON: {exc}.") from None
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise RequestError(f"Ids file {path} must hold a JSON list of integers.")
        return np.asarray(values, dtype=np.int64)
    lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]
    tokens = [(f"Ids file {path}, line {n}", line) for n, line in lines if line]
    return np.asarray(_integers(tokens, hint="write one integer id per line"), dtype=np.int64)


def class_index(name: str, data: Dataset) -> int:
    """A class given by index ('3') or by name ('pneumonia')."""
    if name in data.class_names:
        return data.class_names.index(name)
    try:
        index = int(name)
    except ValueError:
        index = -1
    if 0 <= index < data.num_classes:
        return index
    raise RequestError(
        f"Dataset '{data.name}' has no class {name!r}.",
        hint=f"its classes: {', '.join(f'{i}={n}' for i, n in enumerate(data.class_names))}",
    )


def takes_whole_classes(labels: np.ndarray, ids: np.ndarray, forgotten: np.ndarray) -> bool:
    """True when `ids` are not empty and every training sample of each class among them is
    in `ids` or already `forgotten`: a class request, however it was named."""
    if len(ids) == 0:
        return False
    members = np.flatnonzero(np.isin(labels, np.unique(labels[ids])))
    return bool(np.isin(members, np.union1d(ids, forgotten)).all())
