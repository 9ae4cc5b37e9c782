"""`unlearn export`: a version's weights as a file other code can serve, with provenance.

The weights go to `--out` as safetensors (default) or a plain `torch.save` state dict, and
a JSON sidecar `<out>.json` says where they came from: run, version, method and request,
model name and architecture, the dataset's classes and the normalisation inputs need.
Both files are written atomically. Retired versions are refused: they may hold data a
later request removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.fileio import atomic_path, atomic_write_json, save_weights
from unlearn_cli.ledger import ledger_state
from unlearn_cli.lineage import check_live
from unlearn_cli.rundir import RUN_FORMAT, Run, model_hash, now

EXPORT_FORMAT = "unlearn-export"
FORMATS = ("safetensors", "torch")


def export_version(
    run_path: Path, version: int | None, out: Path, fmt: str = "safetensors", force: bool = False
) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise InvalidParameterError(
            f"--format must be safetensors or torch. Got {fmt!r} instead.",
            hint="safetensors loads without pickle; torch is a torch.save state dict",
        )
    out = Path(out)
    sidecar = out.with_name(out.name + ".json")
    if not out.parent.is_dir():
        raise InvalidParameterError(
            f"--out {out}: the folder {out.parent} does not exist.", hint="create it first"
        )
    if not force and (out.exists() or sidecar.exists()):
        raise InvalidParameterError(
            f"{out if out.exists() else sidecar} already exists.",
            hint="pass --force to replace it, or choose another --out",
        )
    run = Run.open(run_path)
    version = run.resolve_version(version)
    check_live(run, version)
    state = run.load_state(version)  # checked against the receipt's hash
    receipt = run.receipt(version)
    if fmt == "safetensors":
        save_weights(out, state, {"format": EXPORT_FORMAT, "run_format": RUN_FORMAT})
    else:
        with atomic_path(out) as tmp:
            torch.save({k: v.contiguous() for k, v in state.items()}, tmp)
    meta, dataset = run.meta, run.meta["dataset"]
    doc = {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "file": out.name,
        "file_format": fmt,
        "exported": now(),
        "run": str(run.path),
        "version": version,
        "parent": receipt.get("parent"),
        "method": receipt.get("method", "train"),
        "request": receipt.get("request"),
        "forgotten_samples": int(ledger_state(run.version_dir(version)).forgotten_ids.size),
        "model_hash": model_hash(receipt),
        "model": {
            "name": meta["config"]["model"],
            "spec": meta["model"]["spec"],
            "architecture": meta["model"]["architecture"],
        },
        "dataset": {
            "name": dataset["name"],
            "fingerprint": dataset["fingerprint"],
            "class_names": dataset["class_names"],
            "image_size": dataset["image_size"],
            "channels": dataset["channels"],
            "normalize": dataset.get("normalize"),
        },
    }
    atomic_write_json(sidecar, doc)
    return {"out": str(out), "sidecar": str(sidecar), **doc}
