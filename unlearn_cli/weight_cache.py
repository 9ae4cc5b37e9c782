"""Reading a version's weights, with a local cache for object storage (`eval --cache`,
`UNLEARN_CACHE`): a remote file is kept under its content hash, so a later command reads
it from disk; a cached copy whose hash differs is fetched again."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from unlearn_cli.errors import RunError
from unlearn_cli.fileio import atomic_write_bytes, load_weights, load_weights_bytes, state_hash


def read_weights(path: Path, expected: str | None, cache: Path | None) -> dict[str, torch.Tensor]:
    """The weights at `path`, through `cache` when one is given and the hash is known."""
    if not (cache and expected):
        return load_weights(path)
    cached = cache / f"{expected}.safetensors"
    if cached.is_file():
        with contextlib.suppress(RunError):
            state = load_weights(cached)
            if state_hash(state) == expected:
                return state
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return load_weights(path)  # the one "checkpoint not found" error
    state = load_weights_bytes(data, path)
    if state_hash(state) == expected:
        with contextlib.suppress(OSError):  # a cache that cannot be written is skipped
            atomic_write_bytes(cached, data)
    return state
