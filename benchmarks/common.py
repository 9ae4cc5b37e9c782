"""Shared helpers for the benchmark scripts: where data is, where results go, what ran them.

Every script writes `benchmarks/results/<name>.json` (numbers, machine, versions, seeds,
wall times) and `benchmarks/results/<name>.md` (a short table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from unlearn_cli.new_run import environment

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work"  # scratch runs; git-ignored


def data_root() -> Path:
    """UNLEARN_DATA_ROOT, else ../shared/data beside the checkout."""
    env = os.environ.get("UNLEARN_DATA_ROOT")
    root = Path(env) if env else HERE.parent.parent / "shared" / "data"
    if not (root / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST files not found under {root}; set UNLEARN_DATA_ROOT.")
    return root


def machine() -> dict:
    return {
        **environment(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        # the CPU's model and the vector instructions torch uses: convolutions round
        # differently across them, so a training run's trajectory can too
        "cpu_model": cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def cpu_model() -> str | None:
    """The first "model name" of /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    print(f"\nwrote {RESULTS / name}.json and .md")


def parse_args(doc: str, epochs: int = 2) -> argparse.Namespace:
    """The options every forget benchmark takes: --epochs of training, --quick."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args()


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; '–' for missing."""
    return "–" if x is None else f"{100 * x:.1f}"
