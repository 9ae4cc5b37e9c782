"""Issue 47: the record with a tolerance on each tensor's count (store format 3, the
default) against the exact top-k at every step (`--keep-tolerance 0`, the selection
before it), side by side in one run.

1. Overhead, whole runs: MNIST, one epoch at the default training and record, LeNet and
   mlp. Each round trains plain, recorded (tolerance 0.25), recorded exactly (tolerance
   0) and recording as AmnesiacML does (dense pickle, the anchor), in ABCD DCBA order;
   ratios to the plain run of the same round: median (min-max). Targets: LeNet <= 1.10,
   mlp <= 1.25. The writer compresses on its own thread, as in every run.
2. Overhead, interleaved blocks of one training loop (the writer's work inside the block,
   none of it overlapping the next): LeNet and mlp at batch 32, resnet9 at batch 64.
3. The store of each whole run: update bytes, entries kept, and the achieved share of
   each carried tensor against the requested one (`storage-report`). Target: within 10%
   of the exact record's size.
4. Forgetting, on runs recorded both ways from the same seed (LeNet, 2 epochs): the
   amnesiac paper's rare-class request (100 images of class 3) and 100 random samples;
   partial-amnesiac and replay; forget / retained / test accuracy side by side, and the
   100-sample forget's time against training's (target >= 200x for partial-amnesiac).

    python benchmarks/bench_record.py [--pairs 4] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace

import numpy as np
from bench_forget import RARE_CLASS, Scorer, rare_class_npz
from bench_store import CONFIG, PARTS, DensePickle, Loop, anchor_once, where_time_goes
from common import WORK, data_root, markdown_table, pct, write_results

from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.storage_report import storage_report
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.store import make_layout
from unlearn_cli.store.chunks import rows_per_shard
from unlearn_cli.store.layout import parse_schedule
from unlearn_cli.store.recorder import Recorder
from unlearn_cli.train_config import TrainConfig

RECORDS = {"tolerant": RecordConfig(), "exact": RecordConfig(keep_tolerance=0.0)}
KINDS = ["plain", "tolerant", "exact", "dense pickle"]
TARGETS = {"lenet": 1.10, "mlp": 1.25, "resnet9": 1.05}


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values)}


def store_facts(report: dict) -> dict:
    carried = [layer for layer in report["layers"] if layer["variable"]]
    return {
        "update_bytes": report["update_bytes"],
        "kept_entries": report["kept_entries"],
        "carried": [{"name": c["name"], "keep": c["keep"], **c["kept_share"]} for c in carried],
    }


def whole_runs(model_name: str, pairs: int) -> dict:
    """Whole one-epoch runs of every kind, in rounds; the ratios and each record's store."""
    config = replace(CONFIG, model=model_name)
    seconds: dict[str, list[float]] = {k: [] for k in KINDS}
    stores = {}
    for i in range(pairs):
        for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
            if kind == "dense pickle":
                seconds[kind].append(anchor_once(config))
                continue
            record = RECORDS.get(kind, RecordConfig(enabled=False))
            out = WORK / f"record-{kind}"
            summary = train_run(config, record, out, data_root=data_root(), force=True)
            seconds[kind].append(summary["train_seconds"])
            if kind in RECORDS and kind not in stores:
                stores[kind] = store_facts(storage_report(out))
            shutil.rmtree(out, ignore_errors=True)
    plain = seconds["plain"]
    ratios = {k: spread([s / p for s, p in zip(seconds[k], plain, strict=True)]) for k in KINDS[1:]}
    return {"model": model_name, "pairs": pairs, "seconds": seconds, "ratios": ratios,
            "stores": stores}  # fmt: skip


def blocks(model_name: str, pairs: int, batch: int, block: int | None = None) -> dict:
    """ms per step of plain, tolerant and exact blocks of one loop, interleaved."""
    loop = Loop.make(model_name, batch)
    rec = RecordConfig()
    schedule = parse_schedule(rec.schedule, rec.keep)
    layouts = {
        k: make_layout(loop.model, schedule, rec.delta_dtype, r.keep_tolerance)
        for k, r in RECORDS.items()
    }
    block = block or rows_per_shard(layouts["tolerant"].row_width)
    path = WORK / f"blocks-{model_name}"

    def run_block(kind: str) -> float:
        recorder: Recorder | DensePickle | None = None
        if kind in layouts:
            loop.layout = layouts[kind]
            recorder = Recorder(loop.store(path, block), loop.params, block)
        start = time.perf_counter()
        loop.fit(block, recorder.on_step if recorder else None)
        if isinstance(recorder, Recorder):
            recorder.close(complete=False)  # every row selected, compressed and written
        return (time.perf_counter() - start) / block

    kinds = KINDS[:3]
    run_block("plain")  # warm-up
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(pairs):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            times[kind].append(run_block(kind))
    shutil.rmtree(path, ignore_errors=True)
    plain = times["plain"]
    return {
        "model": model_name, "batch_size": batch, "steps_per_block": block, "pairs": pairs,
        "ms_per_step": {k: 1e3 * float(np.median(v)) for k, v in times.items()},
        "ratios": {k: spread([t / p for t, p in zip(times[k], plain, strict=True)])
                   for k in kinds[1:]},
    }  # fmt: skip


def forgetting(epochs: int, random_size: int) -> list[dict]:
    """Both records of the same training, forgetting the same requests."""
    npz = WORK / "mnist-rare3.npz"
    WORK.mkdir(parents=True, exist_ok=True)
    rare_class_npz(npz)
    rare = np.flatnonzero(np.load(npz)["y_train"] == RARE_CLASS)
    picked = np.sort(np.random.default_rng(0).choice(60_000, random_size, replace=False))
    setups = [
        ("rare class", TrainConfig(dataset=f"npz:{npz}", model="lenet", epochs=epochs), rare),
        (f"{random_size} random", TrainConfig(dataset="mnist", model="lenet", epochs=epochs),
         picked),
    ]  # fmt: skip
    rows = []
    for label, config, ids in setups:
        for kind, record in RECORDS.items():
            run = WORK / f"forget-{kind}"
            trained = train_run(config, record, run, data_root=data_root(), force=True)
            scorer = Scorer(run, ids)
            request = ForgetRequest(ids=tuple(ids.tolist()))
            for method in ("partial-amnesiac", "replay"):
                receipt = forget_run(run, ForgetConfig(method, from_version=0), request,
                                     data_root=data_root())  # fmt: skip
                rows.append({
                    "request": label, "record": kind, "method": method,
                    "seconds": receipt["wall_seconds"],
                    "train_seconds": trained["train_seconds"],
                    **scorer.score(receipt["version"]),
                })  # fmt: skip
                print(rows[-1], flush=True)
            shutil.rmtree(run, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=4, help="whole-run rounds per model")
    parser.add_argument("--quick", action="store_true", help="2 rounds, LeNet only")
    args = parser.parse_args()
    pairs = 2 if args.quick else args.pairs
    models = ["lenet"] if args.quick else ["lenet", "mlp"]
    runs = [whole_runs(m, pairs) for m in models]
    block_rows = [blocks("lenet", 2 * pairs, 32)]
    if not args.quick:
        block_rows += [blocks("mlp", 2 * pairs, 32), blocks("resnet9", pairs, 64, block=24)]
    profile = [
        {**where_time_goes(m, rec=record), "record": kind}
        for m in models
        for kind, record in RECORDS.items()
    ]
    forgets = forgetting(1 if args.quick else 2, 100)
    write_results(
        "record_quick" if args.quick else "record",
        {"whole_runs": runs, "blocks": block_rows, "profile": profile, "forgetting": forgets},
        report(runs, block_rows, forgets) + parts_table(profile),
    )


def parts_table(profile: list[dict]) -> str:
    return "\n## Where a recorded step's time goes (batch 32, ms per step)\n\n" + markdown_table(
        ["model", "record", "plain step", *PARTS, "recorded loop"],
        [[p["model"], p["record"], f"{p['ms_per_step_plain']:.2f}",
          *(f"{p['ms_per_step'][x]:.3f}" for x in PARTS), f"{p['ms_per_step_recorded_loop']:.2f}"]
         for p in profile],
    ) + ("\n\nEach part timed where it runs (`bench_store.where_time_goes`): the writer's on "
         "its own thread, overlapping training.\n")  # fmt: skip


def ratio(r: dict) -> str:
    return f"{r['median']:.3f} ({r['min']:.3f}–{r['max']:.3f})"


def report(runs: list[dict], block_rows: list[dict], forgets: list[dict]) -> str:
    md = ["## Recording overhead, whole runs (MNIST, 1 epoch, default training and record)\n"]
    md.append(markdown_table(
        ["model", "rounds", "s plain", "tolerant ÷ plain", "exact ÷ plain",
         "dense pickle ÷ plain", "target"],
        [[r["model"], r["pairs"], f"{np.median(r['seconds']['plain']):.2f}",
          ratio(r["ratios"]["tolerant"]), ratio(r["ratios"]["exact"]),
          ratio(r["ratios"]["dense pickle"]), f"≤ {TARGETS[r['model']]:.2f}"] for r in runs],
    ))  # fmt: skip
    md.append("\n## Recording overhead, interleaved blocks (one loop; ms per step)\n")
    md.append(markdown_table(
        ["model", "batch", "steps/block", "rounds", "plain", "tolerant", "exact",
         "tolerant ÷ plain", "exact ÷ plain"],
        [[b["model"], b["batch_size"], b["steps_per_block"], b["pairs"],
          *(f"{b['ms_per_step'][k]:.2f}" for k in ("plain", "tolerant", "exact")),
          ratio(b["ratios"]["tolerant"]), ratio(b["ratios"]["exact"])] for b in block_rows],
    ))  # fmt: skip
    md.append("\n## The stores (one epoch)\n")
    rows = []
    for r in runs:
        t, e = r["stores"]["tolerant"], r["stores"]["exact"]
        shares = "; ".join(
            f"{c['name']} {c['mean']:.4f} ({c['min']:.4f}–{c['max']:.4f}) of {c['keep']:.4f}"
            for c in t["carried"]
        )
        rows.append([r["model"], f"{e['update_bytes'] / 1e6:.2f}", f"{t['update_bytes'] / 1e6:.2f}",
                     f"{t['update_bytes'] / e['update_bytes']:.3f}",
                     f"{t['kept_entries'] / e['kept_entries']:.3f}", shares])  # fmt: skip
    md.append(markdown_table(
        ["model", "exact MB", "tolerant MB", "size ÷ exact", "entries ÷ exact",
         "carried tensors: share kept mean (min–max) of requested"], rows,
    ))  # fmt: skip
    md.append("\n## Forgetting from both records (LeNet, same training)\n")
    md.append(markdown_table(
        ["request", "method", "record", "forget %", "retained %", "test %", "s",
         "training ÷ forget"],
        [[f["request"], f["method"], f["record"], pct(f["forget_acc"]), pct(f["retain_acc"]),
          pct(f["test_acc"]), f"{f['seconds']:.2f}",
          f"{f['train_seconds'] / f['seconds']:.0f}×"]
         for f in sorted(forgets, key=lambda f: (f["request"], f["method"], f["record"]))],
    ))  # fmt: skip
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
