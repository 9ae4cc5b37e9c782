"""What the integrity checks cost, side by side in one run (LeNet on real MNIST, 1 epoch).

1. Recording: train without recording, with the default record (every chunk checksummed,
   format 2), and with the same record without checksums (format 1's codecs), alternated
   `--repeats` times; ratios of the fastest of each.
2. Reading: a 100-sample `partial-amnesiac` forget on each store (with and without
   checksums), and `unlearn verify` of the checksummed run (every byte of the store read).

    python benchmarks/bench_integrity.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import time
from unittest import mock

import numpy as np
from common import WORK, data_root, markdown_table, write_results

from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.storage_report import storage_report
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.ops.verify import verify_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.store import chunks
from unlearn_cli.train_config import TrainConfig

CONFIG = TrainConfig(dataset="mnist", model="lenet", epochs=1)
VARIANTS = ("no record", "record, checksummed", "record, no checksums")


def unchecked():
    """The store's codecs without the CRC-32C (what format 1 wrote)."""
    blosc_only = chunks.checked_zstd()[:1]
    return mock.patch("unlearn_cli.store.zarr_store.checked_zstd", lambda: blosc_only)


def train(variant: str) -> tuple[float, str]:
    out = WORK / f"integrity-{variant.replace(' ', '_').replace(',', '')}"
    record = RecordConfig(enabled=variant != "no record")
    if variant == "record, no checksums":
        with unchecked():
            summary = train_run(CONFIG, record, out, data_root=data_root(), force=True)
    else:
        summary = train_run(CONFIG, record, out, data_root=data_root(), force=True)
    return summary["train_seconds"], str(out)


def reads(runs: dict[str, str], repeats: int) -> list[dict]:
    ids = np.random.default_rng(0).choice(60000, 100, replace=False)
    request = ForgetRequest(ids=tuple(int(i) for i in ids))
    config = ForgetConfig("partial-amnesiac", from_version=0)  # never a no-op
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS[1:]}
    for _ in range(repeats):  # alternated, like the training runs
        for variant in VARIANTS[1:]:
            receipt = forget_run(runs[variant], config, request)
            seconds[variant].append(receipt["wall_seconds"])
    rows = []
    for variant in VARIANTS[1:]:
        rows.append(
            {
                "what": f"forget 100 samples, {variant}",
                "seconds": min(seconds[variant]),
                "all_seconds": seconds[variant],
                "bytes_read": receipt["bytes_read"],
                "store_bytes": storage_report(runs[variant])["total_bytes"],
            }
        )
    start = time.perf_counter()
    report = verify_run(runs["record, checksummed"])
    rows.append(
        {
            "what": "unlearn verify, checksummed run",
            "seconds": round(time.perf_counter() - start, 3),
            "ok": report["ok"],
            "store_bytes": storage_report(runs["record, checksummed"])["total_bytes"],
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    runs: dict[str, str] = {}
    for _ in range(repeats):  # alternate so drift in machine load hits every variant
        for variant in VARIANTS:
            s, runs[variant] = train(variant)
            seconds[variant].append(s)
    best = {v: min(s) for v, s in seconds.items()}
    recording = {
        "seconds": seconds,
        "overhead_checksummed": best["record, checksummed"] / best["no record"],
        "overhead_no_checksums": best["record, no checksums"] / best["no record"],
        "checksum_cost": best["record, checksummed"] / best["record, no checksums"],
    }
    read_rows = reads(runs, max(3, repeats))
    for path in runs.values():
        shutil.rmtree(path, ignore_errors=True)
    table = markdown_table(
        ["variant", f"train s (best of {repeats})", "÷ no record"],
        [[v, f"{best[v]:.2f}", f"{best[v] / best['no record']:.3f}"] for v in VARIANTS],
    )
    reads_table = markdown_table(
        ["what", "s (best)", "bytes read", "store bytes"],
        [
            [r["what"], f"{r['seconds']:.3f}", r.get("bytes_read", "all"), r["store_bytes"]]
            for r in read_rows
        ],
    )
    md = (
        "## Recording with and without chunk checksums (LeNet, MNIST, 1 epoch)\n\n"
        + table
        + f"\n\nChecksums cost {recording['checksum_cost']:.3f}× the recording without them.\n\n"
        + "## Reading\n\n"
        + reads_table
        + "\n"
    )
    name = "integrity_quick" if args.quick else "integrity"
    write_results(name, {"recording": recording, "reads": read_rows}, md)


if __name__ == "__main__":
    main()
