"""What other `auto` rules would have scored on the committed quality matrix, without rerunning it.

`auto` delegates to one method with that method's own parameters, so on a request where a
rule picks `replay` or partial `optimize` its row would be the matrix's row of that method
(same run, request and seed: the methods are deterministic). This script swaps each `auto`
row of `results/report.json` for the row the candidate rule picks, aggregates as the report
does (`quality.aggregate`, `quality.summary`, `quality.auto_check`), and sets each rule's
average gap per request kind beside the best single method's, with the issue's tolerance of
0.5 points, and the cells (setting, request) within 0.5 points of their best single method.

A rule is a pair of thresholds on the share of recorded steps the request affects: replay
at most `samples` of them on a sample request, at most `classes` on a request that takes
every sample of its classes (the rare-class and whole-class requests), else partial
optimize; `classes` "as samples" judges a class by the sample threshold (as `auto` did
before it knew a class from its ids). The premise is checked: the rules that reproduce
every metric of every `auto` row of the report exactly are named (the rule the report ran
must be among them).

    python benchmarks/auto_rules.py [--report results/report.json]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import quality
from common import RESULTS, markdown_table, write_results

from unlearn_cli.methods.auto import MAX_CLASS_REPLAY_SHARE, MAX_REPLAY_SHARE

SAMPLES = (0.05, 0.10, 0.20, 0.30)
CLASSES = (None, 0.30, 0.60, 1.00)  # None: a class is judged as samples
CLASS_REQUESTS = ("rare class", "whole class")
TOLERANCE = 0.005
OPTIMIZE = "optimize, partial"


def with_rule(rows: list[dict], samples: float, classes: float | None) -> list[dict]:
    """The report's rows with each `auto` row replaced by the one this rule picks."""
    by = {(r["setting"], r["scenario"], r["seed"], r["method"]): r for r in rows}
    out = []
    for r in rows:
        if r["method"] != "auto":
            out.append(r)
            continue
        key = (r["setting"], r["scenario"], r["seed"])
        share = by[(*key, "replay")]["affected_share"]
        limit = samples
        if r["scenario"] in CLASS_REQUESTS and classes is not None:
            limit = classes
        picked = "replay" if share <= limit else OPTIMIZE
        out.append({**copy.deepcopy(by[(*key, picked)]), "method": "auto", "picked": picked})
    return out


def score(rows: list[dict]) -> dict:
    agg = quality.aggregate(rows)
    summ = quality.summary(agg)
    per_kind = {}
    for kind in quality.SCENARIOS:
        singles = {
            m: by[kind]["gap"]
            for m, by in summ.items()
            if kind in by and m not in quality.NOT_CANDIDATES
        }
        best = min(singles, key=lambda m: singles[m])
        floor = summ.get(quality.FLOOR, {}).get(kind, {}).get("gap")
        excess = summ["auto"][kind]["gap"] - singles[best]
        per_kind[kind] = {
            "auto": summ["auto"][kind]["gap"],
            "best": best,
            "best_gap": singles[best],
            "met": excess <= TOLERANCE,
            "floor": floor,
            "under_floor": excess > TOLERANCE and floor is not None and excess <= floor,
            "speedup": summ["auto"][kind]["speedup"],
            "original": summ["original"][kind]["gap"],
        }
    cells = quality.auto_check(agg, rows)
    return {"kinds": per_kind, "cells_met": sum(c["met"] for c in cells), "cells": len(cells)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=RESULTS / "report.json")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    rows = report["rows"]
    committed = score(rows)
    rules = {(t, c): score(with_rule(rows, t, c)) for t in SAMPLES for c in CLASSES}
    own = [r for r in rows if r["method"] == "auto"]

    def reproduces(rule: tuple) -> bool:
        swapped = [r for r in with_rule(rows, *rule) if r["method"] == "auto"]
        return len(own) == len(swapped) and all(
            all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in quality.METRICS)
            for a, b in zip(own, swapped, strict=True)
        )

    exact = [rule for rule in rules if reproduces(rule)]
    current = (MAX_REPLAY_SHARE, MAX_CLASS_REPLAY_SHARE)

    def cell(k: dict) -> str:
        mark = "" if k["met"] else (" (✗, under the floor)" if k["under_floor"] else " ✗")
        return f"{100 * k['auto']:.2f}{mark}"

    def label(rule: tuple) -> list[str]:
        t, c = rule
        names = ["now"] if rule == current else []
        names += ["reproduces the report"] if rule in exact else []
        classes = "as samples" if c is None else f"≤ {100 * c:.0f}%"
        return [f"≤ {100 * t:.0f}%" + (f" ({', '.join(names)})" if names else ""), classes]

    table = [
        label(rule)
        + [cell(r["kinds"][k]) for k in quality.SCENARIOS]
        + [f"{r['cells_met']} / {r['cells']}"]
        for rule, r in rules.items()
    ]
    table.append(
        ["best single method", ""]
        + [
            f"{100 * committed['kinds'][k]['best_gap']:.2f} ({committed['kinds'][k]['best']})"
            for k in quality.SCENARIOS
        ]
        + ["–"]
    )
    table.append(
        ["doing nothing (original)", ""]
        + [f"{100 * committed['kinds'][k]['original']:.2f}" for k in quality.SCENARIOS]
        + ["–"]
    )
    floors = [committed["kinds"][k]["floor"] for k in quality.SCENARIOS]
    if any(f is not None for f in floors):
        table.append(
            [f"floor ({quality.FLOOR})", ""]
            + [f"{100 * f:.2f}" if f is not None else "–" for f in floors]
            + ["–"]
        )
    md = "\n".join(
        [
            "# `auto` rules replayed on the committed quality matrix\n",
            f"From `{args.report.name}` ({report['machine']['date']}). Average gap to `retrain` "
            "in points per request kind; ✗: more than 0.5 points above the best single method "
            "(under the floor: by no more than a second `retrain`, another batch order, lies "
            "from the first). "
            "Last column: (setting, request) cells within 0.5 points of their best single "
            f"method. {len(exact)} of the rules reproduce every metric of the report's "
            f"{len(own)} `auto` rows exactly (marked).\n",
            markdown_table(
                ["replay: samples", "classes", *quality.SCENARIOS, "cells within 0.5"], table
            ),
        ]
    )
    write_results(
        "auto_rules",
        {
            "report": str(args.report.name),
            "report_date": report["machine"]["date"],
            "reproduce_report": [{"samples": t, "classes": c} for t, c in exact],
            "committed": committed,
            "rules": [{"samples": t, "classes": c, **r} for (t, c), r in rules.items()],
            "current": {"samples": current[0], "classes": current[1]},
        },
        md,
    )


if __name__ == "__main__":
    main()
