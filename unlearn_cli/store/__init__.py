"""The update store: pruned per-step updates and the sample->batch index."""

from pathlib import Path

from unlearn_cli.store.base import (
    StepRows,
    StoreInfo,
    UpdateStore,
    decode_values,
    encode_values,
)
from unlearn_cli.store.index import SampleIndex, check_sample_ids
from unlearn_cli.store.layout import (
    SCHEDULES,
    VALUE_DTYPES,
    KeepSchedule,
    StoreLayout,
    make_layout,
    parse_schedule,
)
from unlearn_cli.store.memory import MemoryUpdateStore
from unlearn_cli.store.zarr_store import ZarrUpdateStore


def open_store_if_present(path: Path) -> UpdateStore | None:
    return ZarrUpdateStore.open(path) if (path / "zarr.json").exists() else None


__all__ = [
    "SCHEDULES",
    "VALUE_DTYPES",
    "KeepSchedule",
    "MemoryUpdateStore",
    "SampleIndex",
    "StepRows",
    "StoreInfo",
    "StoreLayout",
    "UpdateStore",
    "ZarrUpdateStore",
    "check_sample_ids",
    "decode_values",
    "encode_values",
    "make_layout",
    "open_store_if_present",
    "parse_schedule",
]
