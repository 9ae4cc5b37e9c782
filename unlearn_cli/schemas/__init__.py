"""The published JSON Schemas of every `--json` document (draft 2020-12).

`schema_path("forget")` is the file for `unlearn forget --json`; see the README's
"Stable documents". Keys are only ever added: every schema allows more properties.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DOCUMENTS = (
    "train",
    "forget",
    "forget-dry-run",
    "eval",
    "storage-report",
    "covariance",
    "shadows",
    "prune",
    "verify",
    "retire",
    "log",
    "export",
    "list",
)


def schema_path(name: str) -> Path:
    return HERE / f"{name}.json"


def load_schema(name: str) -> dict[str, Any]:
    return json.loads(schema_path(name).read_text())
