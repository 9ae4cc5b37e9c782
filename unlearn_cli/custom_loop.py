"""What `record()` checks of a loop of one's own, and what its run.json says of it."""

from __future__ import annotations

from typing import Any

from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.methods import METHODS
from unlearn_cli.models import ModelSpec, architecture_fingerprint, create_model


def check_loop_settings(settings: dict[str, float | int | None], optimizer: str) -> None:
    """With a dataset, replay and retrain re-run the loop's steps: its settings are needed."""
    missing = [n for n in ("lr", "batch_size", "epochs") if settings[n] is None]
    if optimizer == "sgd" and settings["momentum"] is None:
        missing.append("momentum (the SGD optimizer's)")
    if missing:
        raise InvalidParameterError(
            "record(dataset=...) needs the loop's optimizer settings; missing "
            f"{', '.join(missing)}.",
            hint="replay and retrain re-run steps with them (constant lr, as recorded)",
        )


def check_builder(builder: str, model: nn.Module, spec: ModelSpec) -> None:
    """Commands rebuild the model by `builder`: it must build `model`'s architecture."""
    arch = architecture_fingerprint(model)
    rebuilt = architecture_fingerprint(create_model(builder, spec))
    if rebuilt != arch:
        raise InvalidParameterError(
            f"builder '{builder}' builds another architecture than the model given "
            f"({rebuilt[:12]} != {arch[:12]}).",
            hint="name the builder that made this model; commands rebuild it to load weights",
        )


def describe_data(data: Dataset | None, n_samples: int, spec: ModelSpec) -> dict[str, Any]:
    """run.json's dataset: the dataset's own description, or (no dataset) its size and
    the model's input, samples named by id."""
    if data is not None:
        return {**data.describe(), "subjects": data.subjects is not None}
    return {"name": None, "fingerprint": None, "n_train": n_samples, **spec.to_dict()} | {
        "keys": False
    }


def custom_loop_meta(
    meta: dict[str, Any], settings: dict[str, Any], dataset: str | None
) -> dict[str, Any]:
    """run.json of a custom loop: settings not given stay unknown (null), and without a
    dataset it lists the methods that cannot run."""
    meta["config"].update(settings)
    meta["config"]["dataset"] = dataset  # None: the data cannot be reloaded
    meta["loop"] = "custom"
    if dataset is None:
        meta["unavailable"] = {
            "methods": sorted(n for n in METHODS.names() if METHODS.get(n).needs_data),
            "why": "recorded without a dataset: the training data cannot be reloaded, so "
            "only the store's methods (amnesiac, partial-amnesiac) can forget",
        }
    return meta
