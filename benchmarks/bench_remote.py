"""A run on local disk against the same run on S3, side by side in one run.

MNIST/LeNet, 1 epoch, the default record. The S3 side is a local S3-compatible server
(moto's server mode on 127.0.0.1, started here), so its times are the protocol's and the
client's cost without a network's latency; a real bucket adds round trips. Measured:

- train without recording (local), with recording to local disk, with recording to S3;
- a 100-sample `partial-amnesiac` forget (random seeded ids, from version 0), with the
  bytes fetched from storage (counted under zarr) against the bytes of the store.

Alternated `--repeats` times; the fastest of each is the figure, all are kept.

    python benchmarks/bench_remote.py [--repeats 3] [--epochs 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from typing import Any
from unittest import mock

import numpy as np
from common import WORK, data_root, markdown_table, write_results
from zarr.storage import WrapperStore

import unlearn_cli.store.zarr_store as zarr_store_module
from unlearn_cli.location import location
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig


class CountingStore(WrapperStore):
    """Counts the bytes zarr fetches from the wrapped store."""

    fetched = 0

    async def get(self, key, prototype, byte_range=None):  # type: ignore[override]
        buf = await super().get(key, prototype, byte_range)
        if buf is not None:
            CountingStore.fetched += len(buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):  # type: ignore[override]
        out = await super().get_partial_values(prototype, key_ranges)
        CountingStore.fetched += sum(len(b) for b in out if b is not None)
        return out


def counting(real):
    def open_store(path, read_only: bool = False) -> Any:
        from zarr.storage import LocalStore

        store = real(path, read_only)
        if isinstance(store, str):
            store = LocalStore(store, read_only=read_only)
        return CountingStore(store)

    return open_store


def start_server() -> Any:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    boto3.client("s3").create_bucket(Bucket="bench-runs")
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    root = data_root()
    server = start_server()
    config = TrainConfig(dataset="mnist", model="lenet", epochs=args.epochs)
    targets = {
        "plain": (WORK / "remote-plain", RecordConfig(enabled=False)),
        "local": (WORK / "remote-local", RecordConfig()),
        "s3": (None, RecordConfig()),
    }
    train_s: dict[str, list[float]] = {k: [] for k in targets}
    runs = {}
    try:
        for _ in range(args.repeats):
            for name, (path, record) in targets.items():
                out = path or location(f"s3://bench-runs/{uuid.uuid4().hex[:8]}/run")
                start = time.perf_counter()
                train_run(config, record, out, data_root=root, force=True)
                train_s[name].append(time.perf_counter() - start)
                runs[name] = out
                print(f"train {name}: {train_s[name][-1]:.1f} s")
        ids = tuple(np.random.default_rng(0).choice(60_000, 100, replace=False).tolist())
        forget_s: dict[str, list[float]] = {"local": [], "s3": []}
        fetched: dict[str, int] = {}
        receipts: dict[str, dict] = {}
        real = zarr_store_module.zarr_store
        with mock.patch.object(zarr_store_module, "zarr_store", counting(real)):
            for _ in range(args.repeats):
                for name in forget_s:
                    CountingStore.fetched = 0
                    start = time.perf_counter()
                    receipts[name] = forget_run(
                        runs[name],
                        ForgetConfig("partial-amnesiac", from_version=0, max_affected_share=1.0),
                        ForgetRequest(ids=ids),
                        data_root=root,
                    )
                    forget_s[name].append(time.perf_counter() - start)
                    fetched[name] = CountingStore.fetched
                    print(f"forget {name}: {forget_s[name][-1]:.2f} s, {fetched[name]} B")
        store_bytes = {
            name: Run.open(runs[name]).store().accounting().total_bytes  # type: ignore[union-attr]
            for name in forget_s
        }
    finally:
        server.stop()
    best = {k: min(v) for k, v in train_s.items()}
    fbest = {k: min(v) for k, v in forget_s.items()}
    total = store_bytes
    same = receipts["local"]["model_hash"] == receipts["s3"]["model_hash"]
    steps = receipts["local"]["steps"]
    rows = [
        ["train, no record (local)", f"{best['plain']:.1f}", "1.00×", "", ""],
        *[
            [
                f"train, recording to {name}",
                f"{best[name]:.1f}",
                f"{best[name] / best['plain']:.2f}×",
                "",
                f"{total[name] / 2**20:.1f} MiB store",
            ]
            for name in ("local", "s3")
        ],
        *[
            [
                f"forget 100 samples, {name}",
                f"{fbest[name]:.2f}",
                f"{fbest[name] / fbest['local']:.2f}× local",
                f"{fetched[name] / 2**20:.2f} MiB ({fetched[name] / total[name]:.0%})",
                f"{receipts[name]['bytes_read'] / 2**20:.2f} MiB decoded",
            ]
            for name in ("local", "s3")
        ],
    ]
    md = "\n\n".join(
        [
            f"# Local disk against S3 (moto on 127.0.0.1)\n\nMNIST/LeNet, {args.epochs} "
            f"epoch(s), default record; fastest of {args.repeats}. The forget touches "
            f"{steps['affected']} steps and gives the same model on both "
            f"({'same hash' if same else 'DIFFERENT hashes'}).",
            markdown_table(
                ["what", "s", "ratio", "fetched from storage (share of store)", "note"], rows
            ),
        ]
    )
    write_results(
        "remote",
        {
            "train_seconds": train_s,
            "forget_seconds": forget_s,
            "fetched_bytes": fetched,
            "store_bytes": total,
            "same_model": same,
            "affected_steps": steps["affected"],
        },
        md,
    )


if __name__ == "__main__":
    main()
