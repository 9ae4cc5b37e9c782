"""`csv:<manifest>`: images listed in a CSV manifest, one row per image.

Columns (a header row names them; order is free):
- `path` (required): the image file, relative to the manifest's folder or absolute;
- `label` (required): a class name, or integer classes 0..K-1;
- `split` (optional): `train` or `test`. Without it, a stable fifth of the rows (chosen by
  a hash of the key, so independent of row order) is the test split;
- `subject` (optional): the data subject (e.g. a patient id) the image belongs to, so that
  `unlearn forget --subject` can name them;
- `id` (optional): the sample's key; without it, the key is `path`.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from unlearn_cli.data import images
from unlearn_cli.data.base import DATASETS, Dataset
from unlearn_cli.errors import DataError, DataNotFoundError, InvalidParameterError

REQUIRED = ("path", "label")
SPLITS = ("train", "test")
FORMAT_HINT = "a manifest is a CSV with a header: path,label[,split][,subject][,id]"


@DATASETS.register(
    "csv", "images listed in a manifest: csv:<file> with path, label, split, subject"
)
def load_manifest(
    arg: str | None, data_root: Path, download: bool, image_size: int | None
) -> Dataset:
    if not arg:
        raise InvalidParameterError(
            "Dataset 'csv' needs a manifest: use 'csv:<file>'.", hint=FORMAT_HINT
        )
    path = Path(arg).expanduser().resolve()
    if not path.is_file():
        raise DataNotFoundError(f"Manifest not found: {path}.", hint=FORMAT_HINT)
    rows = read_rows(path)
    labels = [r["label"].strip() for r in rows]
    class_names = class_list(labels, path)
    index = {c: i for i, c in enumerate(class_names)}
    split_of = "split" in rows[0]
    has_subject = "subject" in rows[0]
    out: dict[str, list[images.ImageSample]] = {s: [] for s in SPLITS}
    for line, (row, label) in enumerate(zip(rows, labels, strict=True), start=2):
        file = Path(row["path"].strip())
        key = (row.get("id") or "").strip() or row["path"].strip()
        if not row["path"].strip():
            raise DataError(f"{path}, line {line}: the path is empty.", hint=FORMAT_HINT)
        split = row["split"].strip().lower() if split_of else held_out(key)
        if split not in SPLITS:
            raise DataError(
                f"{path}, line {line}: split '{row['split']}' is neither train nor test.",
                hint="use train or test in the split column",
            )
        subject = (row.get("subject") or "").strip() or None
        if has_subject and split == "train" and subject is None:
            raise DataError(
                f"{path}, line {line}: the training image {key} has no subject.",
                hint="give every training row a subject, or drop the subject column",
            )
        out[split].append(
            images.ImageSample(
                file if file.is_absolute() else path.parent / file, key, index[label], subject
            )
        )
    return images.build(
        f"csv:{path}", out["train"], out["test"], class_names, image_size, subjects=has_subject
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = fields
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}).", hint=FORMAT_HINT) from None
    missing = [c for c in REQUIRED if c not in fields]
    if missing:
        raise DataError(f"{path} has no '{missing[0]}' column.", hint=FORMAT_HINT)
    if not rows:
        raise DataError(f"{path} lists no images.", hint=FORMAT_HINT)
    for line, row in enumerate(rows, start=2):
        if None in row or any(row.get(c) is None for c in REQUIRED):
            raise DataError(
                f"{path}, line {line}: the row has {len([v for v in row.values() if v])} "
                f"fields, the header {len(fields)}.",
                hint="one value per column on every line",
            )
    return rows


def class_list(labels: list[str], path: Path) -> tuple[str, ...]:
    """Integer labels 0..K-1 name themselves; otherwise the sorted distinct names."""
    if all(lbl.lstrip("-").isdigit() for lbl in labels):
        values = sorted({int(lbl) for lbl in labels})
        if values[0] < 0 or values != list(range(values[-1] + 1)):
            gap = next(i for i in range(values[-1] + 2) if i not in values)
            raise DataError(
                f"{path}: integer labels must run 0..K-1 without gaps; {gap} is missing.",
                hint="relabel the classes 0..K-1, or use class names as labels",
            )
        return tuple(str(v) for v in values)
    if any(not lbl for lbl in labels):
        raise DataError(f"{path}: a row has an empty label.", hint=FORMAT_HINT)
    return tuple(sorted(set(labels)))


def held_out(key: str) -> str:
    """The split of a manifest without a split column: a fifth of keys, by hash."""
    return "test" if hashlib.blake2b(key.encode(), digest_size=4).digest()[0] % 5 == 0 else "train"
