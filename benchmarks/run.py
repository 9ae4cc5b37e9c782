"""One command for the whole report: quality matrix, Figure 1 and 4 analogues, cost matrix.

    python benchmarks/run.py --quick      # a smoke check: minutes, writes *_quick files
    python benchmarks/run.py              # the full report: 72 minutes on 2 CPU cores
    python benchmarks/run.py --rerun-costs            # also rerun the cost benchmarks first
    python benchmarks/run.py --settings breastmnist   # only the matching settings

Writes results/report.json (every number, machine, versions, seeds, wall times),
results/report.md, results/figure1.png and results/figure4.png (with `_quick` in quick
mode). See benchmarks/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import costs
import figures
import quality
from common import RESULTS, WORK, data_root, machine, markdown_table, pct


def log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


def plus_minus(a: dict, key: str, scale: float = 100, digits: int = 1) -> str:
    if a[key] is None:
        return "–"
    text = f"{scale * a[key]:.{digits}f}"
    std = a.get(key + "_std")
    return text + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def speed(x: float | None) -> str:
    if not x:
        return "–"
    return f"{x:.0f}×" if x >= 10 else f"{x:.1f}×"


def gap_cell(a: dict, key: str) -> str:
    g = a.get("gaps", {}).get(key)
    if g is None:
        return "–"
    text = f"{100 * g['mean']:.1f}" + (f" ± {100 * g['std']:.1f}" if g["std"] is not None else "")
    return text + (" (noise)" if key in a.get("noise", []) else "")


def avg_gap_cell(a: dict) -> str:
    gaps, noise = a.get("gaps", {}), a.get("noise", [])
    if gaps and len(noise) == len(gaps) and a["method"] != "retrain":
        return "0.0 (all noise)"
    return pct(a["gap"])


def quality_tables(agg: list[dict], settings: list[quality.Setting]) -> list[str]:
    md = []
    for scenario in quality.SCENARIOS:
        md.append(f"\n### {scenario}\n")
        for s in settings:
            rows = [a for a in agg if a["setting"] == s.name and a["scenario"] == scenario]
            if not rows:
                continue
            lira = any(a.get("lira_auc") is not None for a in rows)
            attack = "lira_auc" if lira else "member_rate"
            md += [
                f"**{s.name}**, {rows[0]['forget_size']} samples forgotten, "
                f"seeds {', '.join(map(str, s.seeds))}\n",
                markdown_table(
                    [
                        "method",
                        "forget %",
                        "retained %",
                        "test %",
                        "test AUC",
                        "MIA member %",
                        "LiRA AUC",
                        "gap forget",
                        "gap retained",
                        "gap test",
                        f"gap {'LiRA AUC' if lira else 'member'}",
                        "avg gap",
                        "seconds",
                        "speed-up",
                    ],
                    [
                        [
                            a["method"],
                            plus_minus(a, "forget_acc"),
                            plus_minus(a, "retain_acc"),
                            plus_minus(a, "test_acc"),
                            plus_minus(a, "test_auc", 1, 3),
                            plus_minus(a, "member_rate"),
                            plus_minus(a, "lira_auc", 1, 3),
                            gap_cell(a, "forget_acc"),
                            gap_cell(a, "retain_acc"),
                            gap_cell(a, "test_acc"),
                            gap_cell(a, attack),
                            avg_gap_cell(a),
                            plus_minus(a, "seconds", 1, 2),
                            speed(a["speedup"]),
                        ]
                        for a in rows
                    ],
                ),  # fmt: skip
                "",
            ]
    return md


def refused_text(trained: list[dict]) -> str:
    lines = [
        f"- {t['setting']}, seed {t['seed']}, {key} run: {run['refused']}"
        for t in trained
        for key, run in t.items()
        if isinstance(run, dict) and run.get("refused")
    ]
    if not lines:
        return "Every trained run predicts more than one class."
    return (
        "These runs did not learn (their model predicts one class on the whole test split), "
        "so the requests on them are not scored:\n\n" + "\n".join(lines)
    )


def summary_table(summ: dict) -> tuple[str, list[list]]:
    rows, speeds = [], []
    for method, by in summ.items():
        rows.append([method] + [pct(by[s]["gap"]) if s in by else "–" for s in quality.SCENARIOS])
        if method not in ("original", "retrain", quality.FLOOR):
            speeds.append(
                [method] + [speed(by[s]["speedup"]) if s in by else "–" for s in quality.SCENARIOS]
            )
    header = ["method", *quality.SCENARIOS]
    return markdown_table(header, rows), speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check in minutes")
    parser.add_argument("--rerun-costs", action="store_true", help="rerun the cost benchmarks")
    parser.add_argument("--settings", help="only settings whose name contains this text")
    parser.add_argument(
        "--resume", action="store_true", help="reuse the settings an interrupted run finished"
    )
    parser.add_argument(
        "--runs",
        choices=quality.RUN_KEYS,
        help="train only this run of each setting (its requests only); its cached results "
        "then replace that run's in a later --resume",
    )
    args = parser.parse_args()
    suffix = "_quick" if args.quick else ""
    if args.settings:  # a part of the report: its own files, never the whole report's
        suffix += "_" + "".join(c if c.isalnum() else "-" for c in args.settings).strip("-")
    if args.runs:
        suffix += f"_{args.runs}-runs"
    keys = (args.runs,) if args.runs else quality.RUN_KEYS
    root = data_root()
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = quality.QUICK if args.quick else quality.FULL
    if args.settings:
        settings = [s for s in settings if args.settings in s.name]
        if not settings:
            raise SystemExit(f"no setting matches '{args.settings}'")

    # -- quality matrix -------------------------------------------------------------
    rows, trained, timings, reused = [], [], {}, []
    shadows: dict = {}  # setting name -> (its LiRA shadows, the seed that trained them)
    cache = WORK / f"matrix-cache{suffix}"
    if not args.resume:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    for s in settings:
        timings[s.name] = 0.0
        for seed in s.seeds:
            got = cached(cache, s, seed, keys)
            if got is not None:
                log(f"{s.name}, seed {seed}: reusing the cache in {cache}")
                replaced = got.get("replaced")
                later = f" (its {' and '.join(replaced)} run from --runs)" if replaced else ""
                reused.append(f"{s.name}, seed {seed}{later}")
            else:
                log(f"{s.name}, seed {seed}")
                t0 = time.perf_counter()
                rows_, runs = quality.run_setting(
                    s, seed, root, WORK / "matrix", log, keys, shadows
                )
                got = {
                    "rows": rows_,
                    "trained": {"setting": s.name, "seed": seed, **runs},
                    "seconds": time.perf_counter() - t0,
                }
                name = f"{s.slug}-{seed}" + (f"-{args.runs}" if args.runs else "")
                (cache / f"{name}.json").write_text(json.dumps(got))
            rows += got["rows"]
            trained.append(got["trained"])
            timings[s.name] += got["seconds"]
        log(f"{s.name}: {timings[s.name]:.0f} s")
    agg = quality.aggregate(rows)
    summ = quality.summary(agg)

    # -- figures --------------------------------------------------------------------
    t0 = time.perf_counter()
    epochs = 1 if args.quick else 2
    log(f"figures: LeNet on rare-class MNIST, {epochs} epoch(s)")
    fig_run, fig_train = figures.train_rare_run(WORK / f"figures{suffix}", epochs)
    fig1 = figures.figure1(fig_run, 10 if args.quick else 24)
    png1 = RESULTS / f"figure1{suffix}.png"
    plotted1 = figures.plot_figure1(fig1, png1)
    sizes = [10, 100, 1000] if args.quick else [3, 10, 30, 100, 300, 1000, 3000]
    png4 = RESULTS / f"figure4{suffix}.png"
    fig4, plotted4 = figures.figure4(fig_run, sizes, png4)
    timings["figures"] = time.perf_counter() - t0

    # -- costs ----------------------------------------------------------------------
    if args.rerun_costs:
        t0 = time.perf_counter()
        costs.rerun(log)
        timings["cost benchmarks"] = time.perf_counter() - t0
    cost = costs.collect()

    # -- report ---------------------------------------------------------------------
    env = machine()
    wall = sum(timings.values())  # with --resume, includes the reused settings' own times
    gap_table, speed_rows = summary_table(summ)
    md = [
        f"# unlearn benchmark report{' (quick)' if args.quick else ''}"
        + (f", settings matching '{args.settings}'" if args.settings else "")
        + "\n",
        f"{env['date']} · unlearn {env['unlearn']} · torch {env['torch']} · zarr {env['zarr']}"
        f" · Python {env['python']} · {env['cpu_count']} CPU cores ({env['processor']}), "
        f"{env['torch_threads']} torch threads · wall time {wall / 60:.1f} min\n",
        "Command: `python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --settings '{args.settings}'" if args.settings else "")
        + "`. "
        "Every number below was measured in this run except the cost matrix, whose sources "
        "are named. Wall times per part: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
        + "."
        + (
            " With `--resume`, these runs were read from the cache of earlier runs of this "
            "script (the wall time counts their own times; a run replaced by `--runs` "
            "counts twice): " + "; ".join(reused) + "."
            if reused
            else ""
        )
        + "\n",
        "## Summary: average gap to `retrain` (points), mean over settings\n",
        "The gap averages |method − retrain| over forget, retained and test accuracy and one "
        "attack on the forget set: the likelihood-ratio attack's AUC on random requests where "
        "shadows ran, else the feature attack's member rate. Over seeds, a metric whose gap "
        "spreads more than its mean is left out of the average as noise (the quality matrix "
        "shows each metric's gap with its spread). `original` is doing nothing. "
        f"`{quality.FLOOR}` is the floor: `retrain` once more with another batch order, on "
        "the random requests, its gap from the first averaged per seed with every metric "
        "kept (over seeds they are all noise); a gap below it cannot tell a method from "
        "exact retraining.\n",
        gap_table,
        "\n## Runs that did not learn\n",
        refused_text(trained),
        "\n## `auto` against the best single method (average gap, points)\n",
        auto_text(quality.auto_check(agg, rows)),
        "\n## Figure 1 analogue: through training and the request\n",
        figure1_text(fig1, png1.name if plotted1 else None),
        "\n## Figure 4 analogue: accuracy against the share of affected steps\n",
        markdown_table(
            ["samples", "variant", "steps affected %", "test %", "s"],
            [
                [
                    r["size"],
                    r["variant"],
                    pct(r["affected_share"]),
                    pct(r["test_acc"]),
                    f"{r['seconds']:.2f}",
                ]
                for r in fig4
            ],
        ),  # fmt: skip
        "\n" + (f"![Figure 4]({png4.name})" if plotted4 else "(matplotlib missing: no plot)"),
        "\n## Quality matrix\n",
        quality.__doc__.split("\n\n", 1)[1].strip(),
        "\nEach cell is the mean ± sample standard deviation over the seeds listed (no ± "
        "with one seed). speed-up: retrain's wall time over the method's. Settings with "
        "fewer epochs or a prefix of the data are sized to the 2-core CPU budget; see "
        "benchmarks/README.md.",
        *quality_tables(agg, settings),
        costs.markdown(cost, speed_rows),
    ]
    payload = {
        "benchmark": "report" + suffix,
        "machine": env,
        "mode": "quick" if args.quick else "full",
        "settings": [{**s.__dict__, "name": s.name} for s in settings],
        "methods": quality.METHODS,
        "trained": trained,
        "rows": rows,
        "aggregate": agg,
        "summary": summ,
        "auto_check": quality.auto_check(agg, rows),
        "reused": reused,
        "figure1": {**fig1, "train": fig_train},
        "figure4": fig4,
        "costs": cost,
        "wall_seconds": {**timings, "total": wall},
    }
    (RESULTS / f"report{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"report{suffix}.md").write_text("\n".join(md).rstrip() + "\n")
    log(f"wrote {RESULTS}/report{suffix}.md and .json ({wall / 60:.1f} min)")


def cached(cache: Path, s: quality.Setting, seed: int, keys: tuple[str, ...]) -> dict | None:
    """A finished (setting, seed) from the cache: `<slug>-<seed>.json` holds every run's
    results, and a `<slug>-<seed>-<run>.json` written by `--runs <run>` replaces that run's
    requests and training record. None when some run in `keys` is missing."""
    both = cache / f"{s.slug}-{seed}.json"
    got = json.loads(both.read_text()) if both.is_file() else None
    for key in keys:
        part = cache / f"{s.slug}-{seed}-{key}.json"
        if not part.is_file():
            continue
        new = json.loads(part.read_text())
        if got is None:
            got = new
            continue
        kept = [r for r in got["rows"] if quality.SCENARIO_RUN[r["scenario"]] != key]
        got["rows"] = kept + new["rows"]
        got["trained"][key] = new["trained"][key]
        got["seconds"] += new["seconds"]  # the replaced run's time is in the first file too
        got.setdefault("replaced", []).append(key)
    if got is None or any(key not in got["trained"] for key in keys):
        return None
    return got


def auto_text(rows: list[dict]) -> str:
    met = sum(r["met"] for r in rows)
    noise = sum(r["noise"] for r in rows)
    under = sum(r["under_floor"] for r in rows)

    def paired(r: dict) -> str:
        if r["paired_diff"] is None:
            return "–"
        spread = f" ± {100 * r['paired_diff_std']:.1f}" if r["paired_diff_std"] is not None else ""
        return f"{100 * r['paired_diff']:+.1f}{spread}"

    def verdict(r: dict) -> str:
        if r["met"]:
            return "yes"
        hits = (("noise", r["noise"]), ("under the floor", r["under_floor"]))
        why = [w for w, hit in hits if hit]
        return f"no ({', '.join(why)})" if why else "NO"

    table = markdown_table(
        ["setting", "request", "auto", "best single method", "its gap", "auto − best by seed",
         "floor", "within 0.5"],
        [
            [r["setting"], r["scenario"], pct(r["auto_gap"]), r["best"], pct(r["best_gap"]),
             paired(r), pct(r["floor"]) if r["floor"] is not None else "–", verdict(r)]
            for r in rows
        ],
    )  # fmt: skip
    misses = len(rows) - met
    notes = []
    if noise:
        notes.append(
            f"{noise} {'is' if noise == 1 else 'are'} noise (auto's and the best method's "
            "per-seed average gaps, every metric paired by seed, differ by less than their "
            "spread)"
        )
    if under:
        notes.append(
            f"{under} {'is' if under == 1 else 'are'} under the floor (auto is no further "
            "above the best method than a second `retrain`, another batch order, lies from "
            "the first)"
        )
    return (
        f"{table}\n\n`auto` within 0.5 points of the best single method: {met} of {len(rows)}"
        + (f"; of the {misses} misses, " + "; ".join(notes) + "." if notes else ".")
    )


def figure1_text(fig: dict, png: str | None) -> str:
    traj, after = fig["trajectory"], fig["after_request"]
    rows = [["end of training", pct(traj[-1]["targeted"]), pct(traj[-1]["retained"]),
             pct(traj[-1]["test_class"]), "–", "–"]]  # fmt: skip
    rows += [
        [label, pct(a["targeted"]), pct(a["retained"]), pct(a["test_class"]),
         pct(a["affected_share"]), f"{a['seconds']:.2f}"]
        for label, a in after.items()
    ]  # fmt: skip
    return "\n".join(
        [
            f"LeNet, MNIST keeping the first 100 images of class 3, batch 64, "
            f"{fig['steps']} steps; the request forgets all {fig['forget_size']}. The curve "
            "is replayed from the dense record (largest weight difference from the trained "
            f"model: {fig['replay_max_abs_error']:.1e}).\n",
            markdown_table(
                ["model", "targeted %", "retained %", "test class 3 %", "steps removed %", "s"],
                rows,
            ),
            "\n" + (f"![Figure 1]({png})" if png else "(matplotlib missing: no plot)"),
        ]
    )


if __name__ == "__main__":
    main()
