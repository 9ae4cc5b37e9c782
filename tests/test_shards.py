"""Direct shard encoding and partial reads (`store/shards.py`) against zarr itself, and the
exact top-k selection of the recorder against a brute-force one."""

import numpy as np
import pytest
import torch
import zarr

from unlearn_cli.errors import StoreError
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.store import KeepSchedule, ZarrUpdateStore, make_layout, schema
from unlearn_cli.store import shards as shards_module
from unlearn_cli.store.base import StepRows
from unlearn_cli.store.chunks import checked_zstd, delta_filter
from unlearn_cli.store.damage import ChunkDamage
from unlearn_cli.store.selection import prune_delta, select_rows, top_k_positions
from unlearn_cli.store.shards import RowShards

WIDTH, SHARD, ROWS = 40, 12, 30
KINDS = {  # dtype, filters, fill value, rows
    "indices": ("uint32", [delta_filter("uint32")], 0xFFFFFFFF),
    "values": ("float16", [], np.nan),
    "bfloat16 bits": ("uint16", [], 0x7FC0),
}


def rows_of(kind: str, rng) -> np.ndarray:
    if kind == "indices":
        return np.sort(rng.choice(10**6, (ROWS, WIDTH)), axis=1).astype(np.uint32)
    if kind == "values":
        return rng.standard_normal((ROWS, WIDTH)).astype(np.float16)
    return rng.integers(0, 0x7F00, (ROWS, WIDTH)).astype(np.uint16)


def make_array(tmp_path, kind: str, chunk_rows: int, compressors=None):
    dtype, filters, fill = KINDS[kind]
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="a")
    return group.create_array(
        f"{kind.replace(' ', '_')}-{chunk_rows}",
        shape=(ROWS, WIDTH),
        chunks=(chunk_rows, WIDTH),
        shards=(SHARD, WIDTH),
        dtype=dtype,
        filters=filters,
        compressors=checked_zstd() if compressors is None else compressors,
        fill_value=fill,
    )


def shard_file(arr, shard: int):
    return arr.store.root / arr.path / "c" / str(shard) / "0"


SHARDS = [(0, 12), (12, 24), (24, 30)]  # the last is partial


@pytest.fixture(params=["files", "store"])
def fetch(request, monkeypatch):
    """Both ways a read fetches: `pread` on local shard files, and the zarr store's own
    async API (how object storage is read), forced by hiding LocalStore."""
    if request.param == "store":
        monkeypatch.setattr(shards_module, "LocalStore", type("NotLocal", (), {}))
    return request.param


@pytest.mark.parametrize("chunk_rows", [1, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_encoded_shards_are_zarrs_bytes_and_zarr_reads_them(tmp_path, kind, chunk_rows):
    data = rows_of(kind, np.random.default_rng(0))
    written_by_zarr = make_array(tmp_path, kind, chunk_rows)
    written_by_zarr[:] = data
    direct = RowShards.of(written_by_zarr)
    assert direct is not None
    for shard, (lo, hi) in enumerate(SHARDS):
        assert direct.encode_shard(data[lo:hi]) == shard_file(written_by_zarr, shard).read_bytes()

    ours = RowShards.of(zarr.open_array(written_by_zarr.store, path=written_by_zarr.path))
    for shard, (lo, hi) in enumerate(SHARDS):
        ours.write_shard(shard, data[lo:hi])
    np.testing.assert_array_equal(np.asarray(written_by_zarr[:]), data)


@pytest.mark.parametrize("chunk_rows", [1, 3])
def test_scattered_rows_read_only_their_chunks(tmp_path, chunk_rows, fetch):
    data = rows_of("indices", np.random.default_rng(1))
    arr = make_array(tmp_path, "indices", chunk_rows)
    arr[:] = data
    direct = RowShards.of(arr)
    rows = np.array([0, 3, 13, 29])
    np.testing.assert_array_equal(direct.read(rows), data[rows])
    on_disk = sum(shard_file(arr, s).stat().st_size for s in range(len(SHARDS)))
    chunks = len(np.unique(rows // chunk_rows))
    assert direct.fetched_bytes < on_disk * (chunks * chunk_rows + 6) / ROWS
    np.testing.assert_array_equal(direct.read(np.arange(ROWS)), data)
    assert direct.read(np.array([], np.int64)).shape == (0, WIDTH)


def test_rows_of_a_shard_never_written_read_as_the_fill_value(tmp_path, fetch):
    data = rows_of("values", np.random.default_rng(3))
    arr = make_array(tmp_path, "values", 1)
    arr[: SHARDS[0][1]] = data[: SHARDS[0][1]]
    assert not shard_file(arr, 1).exists()
    got = RowShards.of(arr).read(np.array([3, 13, 25]))
    np.testing.assert_array_equal(got[0], data[3])
    assert np.isnan(got[1:]).all()
    np.testing.assert_array_equal(got, np.asarray(arr.get_orthogonal_selection([3, 13, 25])))


def test_a_damaged_chunk_names_its_rows_and_spares_the_others(tmp_path, fetch):
    data = rows_of("values", np.random.default_rng(2))
    arr = make_array(tmp_path, "values", 1)
    arr[:] = data
    path = shard_file(arr, 1)
    raw = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(raw[-(SHARD * 16 + 4) : -4]), "<u8").reshape(-1, 2)
    raw[int(index[4, 0]) + 3] ^= 0xFF  # inside the chunk of row 12 + 4
    path.write_bytes(bytes(raw))
    fresh = RowShards.of(arr)
    with pytest.raises(ChunkDamage) as caught:
        fresh.read(np.array([2, 16, 20]))
    assert caught.value.rows == [(16, 16)] and "checksum" in caught.value.reason
    np.testing.assert_array_equal(fresh.read(np.array([15, 17])), data[[15, 17]])
    raw[-2] ^= 0xFF  # the shard index itself
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkDamage) as caught:
        RowShards.of(arr).read(np.array([13]))
    assert caught.value.rows == [(12, 23)] and "index" in caught.value.reason


def test_other_codec_chains_are_left_to_zarr(tmp_path):
    from zarr.codecs import BloscCodec, GzipCodec

    assert RowShards.of(make_array(tmp_path, "values", 1, [GzipCodec()])) is None
    no_checksum = [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]  # format 1 stores
    assert RowShards.of(make_array(tmp_path, "indices", 1, no_checksum)) is None


@pytest.mark.parametrize("chunk_rows", [1, 4])  # 4: a store written with several rows per chunk
def test_a_store_fetches_only_the_steps_it_reads(tmp_path, monkeypatch, chunk_rows):
    monkeypatch.setattr(schema, "ROWS_PER_CHUNK", chunk_rows)
    if chunk_rows > 1:  # the old geometry: 8 chunks per shard
        monkeypatch.setattr(schema, "rows_per_shard", lambda width: 8 * chunk_rows)
    model = create_model("lenet", ModelSpec(1, 8, 10))
    layout = make_layout(model, KeepSchedule("depth", keep=0.2), "float16")
    store = ZarrUpdateStore.create(
        tmp_path / "d.zarr",
        layout,
        n_samples=6400,
        planned_steps=200,
        model_fingerprint="test",
        schedule={},
    )
    torch.manual_seed(3)
    indices, values, counts = select_rows(layout, torch.randn(200, layout.num_params).numpy())
    batches = [np.arange(32) + 32 * s for s in range(200)]
    rows = StepRows(indices, values.astype(np.float16), np.zeros(200, np.int32), batches, counts)
    store.append(rows)
    again = ZarrUpdateStore.open(store.path)
    steps = np.array([3, 77, 150])
    got, vals = again.read_rows(steps)
    np.testing.assert_array_equal(got, indices[steps])
    fetched = again.fetched_bytes  # before accounting, which reads rows of its own
    stored = again.accounting().update_bytes
    assert again.info().extra["rows_per_chunk"] == chunk_rows
    assert 0 < fetched < stored * 0.05 * chunk_rows
    with pytest.raises(StoreError, match="Step 200 is not in the update store"):
        again.read_rows([200])


def brute_force_top_k(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, ties by lowest position: a stable full sort."""
    return np.sort(np.argsort(-magnitude, kind="stable")[:k])


@pytest.mark.parametrize(
    "n,k",
    [(6, 1), (120, 14), (2400, 156), (48000, 5281), (48000, 47000), (100000, 10)],
)
def test_selection_is_exactly_the_brute_force_top_k(n, k):
    rng = np.random.default_rng(n + k)
    cases = {
        "continuous": np.abs(rng.standard_normal(n)).astype(np.float32),
        "many zeros": np.where(rng.random(n) < 0.6, 0, rng.random(n)).astype(np.float32),
        "coarse ties": rng.integers(0, 5, n).astype(np.float32),
        # large values only where a strided sample never looks: the guess must fall back
        "sample-blind": np.where(
            np.arange(n) % 1024 == 1, 1.0 + rng.random(n), 0.001 * rng.random(n)
        ).astype(np.float32),
    }
    for name, magnitude in cases.items():
        np.testing.assert_array_equal(
            top_k_positions(magnitude, k), brute_force_top_k(magnitude, k), err_msg=name
        )


def test_a_failed_guess_widens_instead_of_partitioning_everything(monkeypatch):
    """Updates concentrated where the fixed sample looks often (a few hot hidden units):
    the first guess leaves fewer than k above it, a wider one suffices, and the result is
    still exactly the top k."""
    from unlearn_cli.store import selection as selection_module

    n, k = 200704, 4015
    rng = np.random.default_rng(1)
    magnitude = (0.001 * rng.random(n)).astype(np.float32)
    sampled = selection_module._sample_positions(n)
    magnitude[sampled[::8]] = 1.0 + rng.random(sampled[::8].size)  # 128 big, all sampled
    exact_calls = []
    full = selection_module._top_k_exact
    monkeypatch.setattr(
        selection_module, "_top_k_exact", lambda m, k: exact_calls.append(m.size) or full(m, k)
    )
    np.testing.assert_array_equal(top_k_positions(magnitude, k), brute_force_top_k(magnitude, k))
    assert exact_calls == []


def test_a_diverged_update_keeps_its_nans_first():
    """NaN updates (a diverged step) are kept like the largest ones, k entries always."""
    layout = make_layout(
        create_model("mlp", ModelSpec(1, 8, 3)), KeepSchedule("depth", keep=0.1), "float16"
    )
    delta = torch.randn(layout.num_params)
    delta[::7] = float("nan")
    idx, values = prune_delta(delta, layout)
    assert idx.numel() == sum(ly.k for ly in layout.layers) and torch.all(idx[1:] > idx[:-1])
    big = layout.layers[0]
    nans = np.flatnonzero(np.isnan(delta[big.offset : big.offset + big.numel].numpy()))
    kept = idx[: big.k].numpy() - big.offset
    assert np.isin(kept, nans).all() or np.isin(nans, kept).all()


def test_a_single_nan_outside_the_sample_is_kept_first():
    """One NaN where the threshold's sample does not look (a weight that overflowed) still
    ranks above every number, as topk ranks it: the rest of the row is the exact top-k."""
    from unlearn_cli.store import selection as selection_module

    layout = make_layout(
        create_model("mlp", ModelSpec(1, 8, 3)), KeepSchedule("depth", keep=0.1), "float16"
    )
    big = layout.layers[0]
    assert big.numel >= 4 * selection_module.SELECTION_SAMPLE and 4 * big.k < big.numel
    sampled = set(selection_module._sample_positions(big.numel).tolist())
    hidden = next(i for i in range(big.numel) if i not in sampled)
    delta = torch.randn(layout.num_params, generator=torch.Generator().manual_seed(0))
    delta[big.offset + hidden] = float("nan")
    idx, _ = prune_delta(delta, layout)
    magnitude = np.nan_to_num(np.abs(delta.numpy()), nan=np.inf)
    expected = np.concatenate(
        [
            brute_force_top_k(magnitude[layer.offset : layer.offset + layer.numel], layer.k)
            + layer.offset
            for layer in layout.layers
        ]
    )
    np.testing.assert_array_equal(idx.numpy(), expected)
    assert big.offset + hidden in idx.numpy()


def test_the_threshold_guess_holds_on_image_shaped_layers(monkeypatch):
    """An MLP's first layer (256 x 784) whose always-black pixels get no update: the guess
    from the sample must leave only a little more than k entries to partition exactly (a
    strided sample read only black pixels, guessed 0 and partitioned the whole layer)."""
    from unlearn_cli.store import selection as selection_module

    rng = np.random.default_rng(0)
    weights = np.abs(rng.standard_normal((256, 784))).astype(np.float32)
    weights[:, np.r_[0:100, 196:220, 392:420, 588:600]] = 0  # pixels that are always 0
    magnitude, k = weights.ravel(), 4015
    sizes = []
    mask = selection_module._top_k_mask
    monkeypatch.setattr(
        selection_module, "_top_k_mask", lambda m, k: sizes.append(m.size) or mask(m, k)
    )
    np.testing.assert_array_equal(top_k_positions(magnitude, k), brute_force_top_k(magnitude, k))
    assert sizes and max(sizes) < 2 * k
