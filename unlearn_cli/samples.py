"""Sample keys and data subjects of a run, kept as keyed hashes.

A run trained on a dataset whose samples have keys (`imagefolder:`, `csv:`, or the Python
recorder given keys) holds `samples.npz`: for each training sample id, a keyed hash of its
key and, where a subject is known, of its subject. The hash key is `secret.key`, 32 random
bytes created with the run and kept beside it (mode 0600).

So a request may name samples by key (`forget --keys`) or by data subject (`--subject`),
and neither the run, its receipts nor its ledger hold the identifier in clear: a request
is resolved by hashing what it names with the run's secret, and receipts store only those
hashes. Whoever holds the run (and so its secret) can test a guessed identifier against
them; whoever holds a receipt alone cannot.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unlearn_cli.errors import InvalidParameterError, RequestError, RunError
from unlearn_cli.fileio import atomic_write_bytes
from unlearn_cli.location import is_remote

if TYPE_CHECKING:
    from unlearn_cli.data import Dataset

SAMPLES_NAME = "samples.npz"
SECRET_NAME = "secret.key"
HASH_BYTES = 16
NO_SUBJECT = b""


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def keyed_hash(secret: bytes, text: str) -> str:
    """HMAC-SHA256 of `text` under the run's secret, first 16 bytes as hex."""
    return hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()[: 2 * HASH_BYTES]


def write_samples(
    folder: Path, secret: bytes, keys: Sequence[str], subjects: Sequence[str] | None
) -> None:
    """`secret.key` and `samples.npz` into `folder` (a run's temp folder before its rename;
    on object storage, the run's prefix before run.json commits it: access to the secret is
    then the bucket's policy, as file mode 0600 cannot say it)."""
    secret_path = folder / SECRET_NAME
    if is_remote(folder):
        atomic_write_bytes(secret_path, secret.hex().encode())
    else:
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret.hex().encode())
            f.flush()
            os.fsync(f.fileno())
    key_hash = np.array([keyed_hash(secret, k) for k in keys], dtype=f"S{2 * HASH_BYTES}")
    arrays = {"key_hash": key_hash}
    if subjects is not None:
        arrays["subject_hash"] = np.array(
            [keyed_hash(secret, s) if s else "" for s in subjects], dtype=f"S{2 * HASH_BYTES}"
        )
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(folder / SAMPLES_NAME, buffer.getvalue())


def index_writer(
    keys: Sequence[str] | None, subjects: Sequence[str] | None
) -> Callable[[Path], None] | None:
    """What `new_run.start_run` calls to write a new run's sample index (None: no keys)."""
    if keys is None:
        return None
    return lambda folder: write_samples(folder, new_secret(), keys, subjects)


@dataclass(frozen=True)
class SampleKeys:
    """A run's keyed hashes of sample keys (and subjects), by sample id."""

    secret: bytes
    key_hash: np.ndarray  # (N,) S32
    subject_hash: np.ndarray | None  # (N,) S32, b"" where no subject

    @classmethod
    def open(cls, run_path: Path) -> SampleKeys | None:
        path = run_path / SAMPLES_NAME
        if not path.exists():
            return None
        try:
            secret = bytes.fromhex((run_path / SECRET_NAME).read_text().strip())
            with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
                keys = npz["key_hash"]
                subjects = npz.get("subject_hash", None)
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(
                f"The sample index of run {run_path} is unreadable ({type(exc).__name__}: {exc}).",
                hint=f"restore {SAMPLES_NAME} and {SECRET_NAME} from a backup",
            ) from None
        return cls(secret, keys, subjects)

    def hash(self, text: str) -> str:
        return keyed_hash(self.secret, text)

    def ids_for_keys(self, keys: Iterable[str]) -> np.ndarray:
        return self._lookup(self.key_hash, keys, "key", "a training sample's key")

    def ids_for_subjects(self, subjects: Iterable[str]) -> np.ndarray:
        if self.subject_hash is None:
            raise RequestError(
                "This run has no data subjects: its dataset named none at training time.",
                hint="train with a manifest's subject column or --subjects FILE, or name "
                "samples with --keys or --ids",
            )
        return self._lookup(self.subject_hash, subjects, "subject", "a data subject")

    def _lookup(self, table: np.ndarray, names: Iterable[str], what: str, hint: str) -> np.ndarray:
        found = []
        for name in names:
            hits = np.flatnonzero(table == self.hash(name).encode())
            if hits.size == 0:
                raise RequestError(
                    f"The run has no training sample with {what} {name!r}.",
                    hint=f"check the spelling; --{what}s takes {hint} as the dataset gave it",
                )
            found.append(hits)
        return np.concatenate(found) if found else np.empty(0, np.int64)


def require_keys(index: SampleKeys | None, run_path: Path) -> SampleKeys:
    if index is None:
        raise RequestError(
            f"Run {run_path} has no sample keys: its dataset names samples by position only.",
            hint="name samples with --ids or --class (keys come with imagefolder: and csv: "
            "datasets and with the Python recorder)",
        )
    return index


def read_subjects(path: Path, data: Dataset) -> tuple[str, ...]:
    """A CSV `key,subject` (with that header) -> the subject of each training sample."""
    if data.keys is None:
        raise InvalidParameterError(
            f"--subjects needs a dataset whose samples have keys; '{data.name}' names them "
            "by position only.",
            hint="use an imagefolder: or csv: dataset (a manifest may carry a subject column)",
        )
    if not path.is_file():
        raise InvalidParameterError(
            f"Subjects file not found: {path}.", hint="a CSV with the header key,subject"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise InvalidParameterError(f"{path} is not a readable CSV file ({exc}).") from None
    if not rows or not {"key", "subject"} <= set(rows[0]):
        raise InvalidParameterError(
            f"{path} needs the columns key and subject.", hint="a CSV with the header key,subject"
        )
    index = {k: i for i, k in enumerate(data.keys)}
    subjects = [""] * len(data.keys)
    for line, row in enumerate(rows, start=2):
        key = (row["key"] or "").strip()
        if key not in index:
            raise InvalidParameterError(
                f"{path}, line {line}: no training sample has the key {key!r}.",
                hint="keys are paths relative to the image folder (e.g. train/cat/001.png) "
                "or a manifest's id",
            )
        subjects[index[key]] = (row["subject"] or "").strip()
    return tuple(subjects)
