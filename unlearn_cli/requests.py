"""Deletion requests: sample ids from the command line, a file, or whole classes.

All of them resolve to sorted unique sample ids (positions in the training split).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearn_cli.data import Dataset
from unlearn_cli.errors import RequestError
from unlearn_cli.store import check_sample_ids


@dataclass(frozen=True)
class ForgetRequest:
    """What the user asked to forget, before it is checked against a dataset."""

    ids: tuple[int, ...] = ()
    ids_file: Path | None = None
    classes: tuple[str, ...] = field(default=())

    def describe(self) -> dict:
        return {
            "ids": len(self.ids),
            "ids_file": str(self.ids_file) if self.ids_file else None,
            "classes": list(self.classes),
        }

    @property
    def given(self) -> bool:
        return bool(self.ids or self.ids_file is not None or self.classes)

    def check_given(self) -> None:
        if not self.given:
            raise RequestError(
                "The request names no samples.",
                hint="pass --ids 3,17,256, --ids-file FILE or --class 3",
            )

    def resolve(
        self, n_train: int, load_data: Callable[[], Dataset]
    ) -> tuple[np.ndarray, list[int]]:
        """(sorted unique sample ids, class indices). Data is loaded only for classes."""
        self.check_given()
        parts = [np.asarray(self.ids, dtype=np.int64)]
        if self.ids_file is not None:
            parts.append(read_ids_file(self.ids_file))
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
