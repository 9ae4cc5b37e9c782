"""The cost matrix, collected from the earlier benchmarks' results into the report.

Each number names the results file it comes from and when that file was written;
`run.py --rerun-costs` runs those benchmarks first, so every number is from this run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from common import HERE, RESULTS, markdown_table
from quality import SCENARIOS

SOURCES = {  # results name -> the command that writes it
    "train_lenet_mnist": ["bench_train.py"],
    "store": ["bench_store.py"],
    "forget": ["bench_forget.py"],
    "prune": ["bench_prune.py"],
}


def rerun(log) -> None:
    for name, argv in SOURCES.items():
        log(f"rerunning {' '.join(argv)} (writes results/{name}.json)")
        subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], check=True, cwd=HERE)


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def collect() -> dict:
    """What the cost benchmarks measured, keyed by cost; missing files are named."""
    out: dict = {"sources": {}, "missing": []}
    docs = {name: load(name) for name in SOURCES}
    for name, doc in docs.items():
        if doc is None:
            out["missing"].append(f"results/{name}.json (python benchmarks/{SOURCES[name][0]})")
        else:
            out["sources"][name] = doc["machine"]["date"]
    if store := docs["store"]:
        out["recording_overhead"] = store["overhead"]
        out["store_size"] = store["sizes"]
        out["index_lookup"] = store["index"]
    if forget := docs["forget"]:
        out["forget_latency"] = forget["latency"]
    if prune := docs["prune"]:
        out["prune"] = prune["pruned"]
    if train := docs["train_lenet_mnist"]:
        out["train"] = {"seconds_per_epoch": train["seconds_per_epoch"]}
    return out


def section(title: str, header: list[str], rows: list[list]) -> list[str]:
    return [f"### {title}\n", markdown_table(header, rows), ""]


def markdown(costs: dict, quality_speedups: list[list]) -> str:
    md = ["## Cost matrix\n"]
    if costs["sources"]:
        md.append(
            "Collected from "
            + ", ".join(f"`results/{n}.json` ({d})" for n, d in costs["sources"].items())
            + "; LeNet on MNIST, 2 CPU cores.\n"
        )
    if costs["missing"]:
        md.append("Not available (run these first): " + "; ".join(costs["missing"]) + ".\n")
    if o := costs.get("recording_overhead"):
        runs = [o] if isinstance(o, dict) else o  # one dict: a store.json before pairs
        md += section(
            "Recording overhead (1 epoch, whole runs)",
            ["model", "record", "s without", "s with", "with ÷ without"],
            [[r.get("model", "lenet"), f"keep {r['keep']} {r['delta_dtype']}",
              f"{np.median(r['seconds_without']):.2f}", f"{np.median(r['seconds_with']):.2f}",
              f"{r.get('ratio_median', r.get('ratio')):.2f}×"
              + (f" (median of {r['pairs']} pairs)" if "pairs" in r else "")] for r in runs],
        )  # fmt: skip
    if sizes := costs.get("store_size"):
        md += section(
            "Store bytes against dense fp32 and the information bound (1 epoch)",
            ["keep", "schedule", "dtype", "MiB", "dense fp32 ÷ store", "store ÷ bound"],
            [[s["keep"], s["schedule"], s["delta_dtype"], f"{s['store_bytes'] / 2**20:.1f}",
              f"{s['ratio_dense']:.1f}×", f"{s['ratio_bound']:.2f}"] for s in sizes],
        )  # fmt: skip
    if lat := costs.get("forget_latency"):
        requests = {k: v for k, v in lat.items() if isinstance(v, dict) and "method_seconds" in v}
        md += section(
            "Forget latency against retraining (partial-amnesiac, default record)",
            ["request", "steps affected %", "method s", "command s", "train s", "× faster"],
            [[k, f"{100 * v['affected_share']:.1f}", f"{v['method_seconds']:.3f}",
              f"{v['command_seconds']:.2f}", f"{lat['train_seconds']:.1f}",
              f"{v['speedup_method']:.0f}"] for k, v in requests.items()],
        )  # fmt: skip
    if quality_speedups:
        md += section(
            "Median speed-up over `retrain` across the quality matrix's settings",
            ["method", *SCENARIOS],
            quality_speedups,
        )
    if index := costs.get("index_lookup"):
        md += section(
            "Index look-up time against dataset size (10,000 ids, 10 epochs, batch 64)",
            ["samples", "steps", "steps found", "build s", "look-up ms"],
            [[f"{r['n_samples']:,}", f"{r['steps']:,}", f"{r['steps_found']:,}",
              f"{r['build_seconds']:.2f}", f"{r['lookup_ms_best']:.1f}"] for r in index],
        )  # fmt: skip
    if prune := costs.get("prune"):
        md += section(
            "Pruning (`unlearn prune`, 3 rounds, 1 fine-tuning epoch each)",
            ["sparsity", "seconds", "test %"],
            [[f"{float(k):.0%}", f"{v['wall_seconds']:.1f}", f"{100 * v['test_accuracy']:.1f}"]
             for k, v in prune.items()],
        )  # fmt: skip
    return "\n".join(md)
