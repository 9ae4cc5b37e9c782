"""Whole shards of step rows, encoded and read directly in the Zarr v3 sharding format.

The update arrays (`updates/indices`, `updates/values`) are ordinary Zarr v3 arrays
with the `sharding_indexed` codec, which any zarr client reads. Inside a shard of S
rows each inner chunk holds whole rows (one in new stores, more in older ones), encoded by

    [numcodecs.delta (indices only)] -> bytes (little endian) -> blosc -> crc32c

and the shard ends in its index: per chunk (offset, nbytes) as little-endian uint64,
(2^64-1, 2^64-1) for a chunk never written, followed by a CRC-32C of those bytes.

zarr-python 3.1 spends most of a write in per-chunk task machinery (0.27 ms of CPU
per LeNet step with 36-row chunks, 2.6 ms with one-row chunks, against 0.08 ms in the
codecs themselves), and its orthogonal selection of 10% of the rows took longer than
reading the whole array. The two hot paths therefore go through this module instead:
the recorder's append of a whole shard (one `set` per shard) and a read of scattered
rows (the shard indexes, then only the byte ranges of the chunks that hold the rows,
fetched concurrently through the array's own store (fsspec), or with one `pread` per
chunk from local shard files). `tests/test_shards.py` checks that the bytes are exactly
zarr's, both ways. An array whose codecs differ from this chain (format 1 stores, no
checksums) is read and written by zarr itself: `RowShards.of` returns None for it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from unlearn_cli.store.damage import ChunkDamage

NO_CHUNK = np.uint64(2**64 - 1)


@dataclass
class RowShards:
    """Direct access to a 2-D array of rows sharded along its first axis, whole rows per
    chunk, with the codec chain above. Counts the bytes it fetches (`fetched_bytes`)."""

    store: Store
    path: str
    shard_rows: int
    chunk_rows: int
    width: int
    dtype: np.dtype
    fill: Any
    delta: bool
    blosc: numcodecs.Blosc
    fetched_bytes: int = 0
    _indexes: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, arr: zarr.Array) -> RowShards | None:
        """The direct codec for `arr`, or None when its layout is not the one above."""
        meta: Any = arr.metadata.to_dict()  # parsed JSON
        if meta.get("zarr_format") != 3 or len(arr.shape) != 2 or len(meta["codecs"]) != 1:
            return None
        key_encoding = meta["chunk_key_encoding"]
        sharding = meta["codecs"][0]
        if (
            key_encoding.get("name") != "default"
            or key_encoding.get("configuration", {}).get("separator", "/") != "/"
            or sharding["name"] != "sharding_indexed"
        ):
            return None
        conf = sharding["configuration"]
        shard_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        chunk_shape = conf["chunk_shape"]
        width = arr.shape[1]
        if shard_shape[1] != width or chunk_shape[1] != width or conf["index_location"] != "end":
            return None
        if [c["name"] for c in conf["index_codecs"]] != ["bytes", "crc32c"] or any(
            c.get("configuration", {}).get("endian", "little") != "little"
            for c in conf["index_codecs"]
        ):
            return None
        codecs = list(conf["codecs"])
        dtype = np.dtype(arr.dtype).newbyteorder("<")
        delta = bool(codecs) and codecs[0]["name"] == "numcodecs.delta"
        if delta:
            if np.dtype(codecs[0]["configuration"].get("dtype")) != dtype or codecs[0][
                "configuration"
            ].get("astype", dtype.name) not in (dtype.name, dtype.str):
                return None
            codecs = codecs[1:]
        if [c["name"] for c in codecs] != ["bytes", "blosc", "crc32c"]:
            return None
        if codecs[0]["configuration"].get("endian", "little") != "little":
            return None
        b = codecs[1]["configuration"]
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[b["shuffle"]]
        blosc = numcodecs.Blosc.from_config(
            {
                "cname": b["cname"],
                "clevel": b["clevel"],
                "shuffle": shuffle,
                "blocksize": b["blocksize"],
                "typesize": b["typesize"],
            }
        )
        return cls(
            arr.store_path.store,
            arr.store_path.path,
            int(shard_shape[0]),
            int(chunk_shape[0]),
            width,
            dtype,
            arr.fill_value,
            delta,
            blosc,
        )

    @property
    def chunks_per_shard(self) -> int:
        return -(-self.shard_rows // self.chunk_rows)

    @property
    def index_bytes(self) -> int:
        """Bytes of a shard's index: (offset, nbytes) uint64 per chunk, then a CRC-32C."""
        return self.chunks_per_shard * 16 + 4

    def key(self, shard: int) -> str:
        return f"{self.path}/c/{shard}/0"

    # -- writing ----------------------------------------------------------------------
    def encode_shard(self, rows: np.ndarray) -> bytes:
        """The bytes of a shard whose first len(rows) rows are `rows` (the rest unwritten).
        A partial last chunk is padded with the fill value, as zarr pads it."""
        n = len(rows)
        if n == 0 or n > self.shard_rows or rows.shape[1:] != (self.width,):
            raise ValueError(f"a shard holds 1..{self.shard_rows} rows of {self.width}")
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        parts, index, offset = [], np.full((self.chunks_per_shard, 2), NO_CHUNK), 0
        for c in range(-(-n // self.chunk_rows)):
            chunk = data[c * self.chunk_rows : (c + 1) * self.chunk_rows]
            if len(chunk) < self.chunk_rows:
                pad = np.full((self.chunk_rows - len(chunk), self.width), self.fill, self.dtype)
                chunk = np.concatenate([chunk, pad])
            encoded = self._encode_chunk(chunk)
            parts.append(encoded)
            index[c] = (offset, len(encoded))
            offset += len(encoded)
        parts.append(_with_crc(index.astype("<u8").tobytes()))
        return b"".join(parts)

    def write_shard(self, shard: int, rows: np.ndarray) -> None:
        """Write (replace) shard `shard` as one object. The array's shape must already
        cover the rows; the caller commits them afterwards."""
        buf = default_buffer_prototype().buffer.from_bytes(self.encode_shard(rows))
        sync(self.store.set(self.key(shard), buf))
        self._indexes.pop(shard, None)

    def _encode_chunk(self, chunk: np.ndarray) -> bytes:
        flat = chunk.reshape(-1)
        if self.delta:
            encoded = np.empty_like(flat)
            encoded[0] = flat[0]
            np.subtract(flat[1:], flat[:-1], out=encoded[1:])
            flat = encoded
        return _with_crc(self.blosc.encode(flat.view(np.uint8)))

    # -- reading ----------------------------------------------------------------------
    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (ascending, within the array), fetching only the chunks that
        hold them. Raises ChunkDamage naming every chunk that fails its checksum."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.width), self.dtype)
        if rows.size == 0:
            return out
        chunks = [int(c) for c in np.unique(rows // self.chunk_rows)]
        if isinstance(self.store, LocalStore):
            fetched = self._fetch_files(Path(self.store.root), chunks)
        else:
            fetched = sync(self._fetch(chunks))
        return self._decode_rows(rows, chunks, fetched, out)

    def _ranges(self, chunks: list[int]) -> list[tuple[int, int, int, int]]:
        """(chunk, shard, offset, nbytes) of each chunk the loaded shard indexes list."""
        ranges = []
        for chunk in chunks:
            shard, local = divmod(chunk, self.chunks_per_shard)
            offset, nbytes = self._indexes[shard][local]
            if offset != NO_CHUNK:
                ranges.append((chunk, shard, int(offset), int(nbytes)))
        return ranges

    async def _fetch(self, chunks: list[int]) -> dict[int, bytes]:
        """The chunks' bytes through the store, concurrently (object storage)."""
        shards = {c // self.chunks_per_shard for c in chunks} - set(self._indexes)
        await asyncio.gather(*(self._load_index(s) for s in shards))
        ranges = self._ranges(chunks)
        bufs = await asyncio.gather(
            *(
                self.store.get(
                    self.key(shard), default_buffer_prototype(), RangeByteRequest(o, o + n)
                )
                for _, shard, o, n in ranges
            )
        )
        return {c: b.to_bytes() for (c, *_), b in zip(ranges, bufs, strict=True) if b is not None}

    def _fetch_files(self, root: Path, chunks: list[int]) -> dict[int, bytes]:
        """The chunks' bytes from local shard files: one `pread` per chunk on a file
        opened once. zarr's LocalStore opens the file and hops to a thread for every
        range (about 0.2 ms each), which was most of a small request's time."""
        fetched: dict[int, bytes] = {}
        shards = sorted({c // self.chunks_per_shard for c in chunks})
        files: dict[int, int] = {}
        try:
            for shard in shards:
                try:
                    files[shard] = os.open(root / self.key(shard), os.O_RDONLY)
                except FileNotFoundError:
                    self._set_index(shard, None)
                    continue
                if shard not in self._indexes:
                    size, end = self.index_bytes, os.fstat(files[shard]).st_size
                    self._set_index(shard, os.pread(files[shard], size, max(0, end - size)))
            for chunk, shard, offset, nbytes in self._ranges(chunks):
                fetched[chunk] = os.pread(files[shard], nbytes, offset)
        finally:
            for fd in files.values():
                os.close(fd)
        return fetched

    def _decode_rows(
        self, rows: np.ndarray, chunks: list[int], fetched: dict[int, bytes], out: np.ndarray
    ) -> np.ndarray:
        damaged: list[tuple[int, int]] = []
        reasons: list[str] = []
        chunk_of_row = rows // self.chunk_rows
        for chunk in chunks:
            start = chunk * self.chunk_rows
            at = np.flatnonzero(chunk_of_row == chunk)
            raw = fetched.get(chunk)
            if raw is None:  # never written (or missing): the fill value, as zarr reads it
                out[at] = self.fill
                continue
            self.fetched_bytes += len(raw)
            try:
                decoded = self._decode_chunk(raw)
            except ValueError as exc:
                damaged.append((start, start + self.chunk_rows - 1))
                reasons.append(str(exc))
                continue
            out[at] = decoded[rows[at] - start]
        if damaged:
            raise ChunkDamage(damaged, reasons[0])
        return out

    async def _load_index(self, shard: int) -> None:
        buf = await self.store.get(
            self.key(shard), default_buffer_prototype(), SuffixByteRequest(self.index_bytes)
        )
        self._set_index(shard, None if buf is None else buf.to_bytes())

    def _set_index(self, shard: int, raw: bytes | None) -> None:
        """Keep shard `shard`'s index from its last bytes (None: the shard was never
        written, so every chunk reads as the fill value)."""
        if raw is None:
            self._indexes[shard] = np.full((self.chunks_per_shard, 2), NO_CHUNK)
            return
        self.fetched_bytes += len(raw)
        if len(raw) != self.index_bytes or not _crc_ok(raw):
            first = shard * self.shard_rows
            last = first + self.shard_rows - 1
            raise ChunkDamage([(first, last)], "the shard index fails its checksum")
        self._indexes[shard] = np.frombuffer(raw[:-4], "<u8").reshape(-1, 2)

    def _decode_chunk(self, raw: bytes) -> np.ndarray:
        if not _crc_ok(raw):
            raise ValueError("the chunk fails its CRC-32C checksum")
        try:
            data = np.frombuffer(self.blosc.decode(raw[:-4]), self.dtype)
        except Exception as exc:  # blosc raises RuntimeError on damaged frames
            raise ValueError(f"the chunk cannot be decompressed: {exc}") from None
        if data.size != self.chunk_rows * self.width:
            raise ValueError("the chunk decodes to the wrong size")
        if self.delta:
            data = np.cumsum(data, dtype=self.dtype)
        return data.reshape(self.chunk_rows, self.width)


def _with_crc(data: bytes) -> bytes:
    return data + np.uint32(google_crc32c.value(data)).astype("<u4").tobytes()


def _crc_ok(raw: bytes) -> bool:
    return len(raw) >= 4 and google_crc32c.value(raw[:-4]) == int.from_bytes(raw[-4:], "little")
