"""One command for the whole report: quality matrix, Figure 1 and 4 analogues, cost matrix.

    python benchmarks/run.py --quick      # a smoke check: minutes, writes *_quick files
    python benchmarks/run.py              # the full report: 46.4 min on 2 cores
    python benchmarks/run.py --jobs 2     # two settings or seeds at once, in two processes
    python benchmarks/run.py --rerun-costs            # also rerun the cost benchmarks first
    python benchmarks/run.py --settings breastmnist   # only the matching settings

Writes results/report.json (every number, machine, versions, seeds, wall times),
results/report.md, results/figure1.png and results/figure4.png (with `_quick` in quick
mode). See benchmarks/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import costs
import figures
import numpy as np
import quality
import torch
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
            md += [
                f"**{s.name}**, {rows[0]['forget_size']} samples forgotten, "
                f"seeds {', '.join(map(str, s.seeds))}\n",
                corrective_table(rows) if scenario in quality.CORRECTIVE else matrix_table(rows),
                "",
            ]
    return md


def matrix_table(rows: list[dict]) -> str:
    lira = any(a.get("lira_auc") is not None for a in rows)
    attack = "lira_auc" if lira else "member_rate"
    return markdown_table(
        ["method", "forget %", "retained %", "test %", "test AUC", "MIA member %", "LiRA AUC",
         "gap forget", "gap retained", "gap test", f"gap {'LiRA AUC' if lira else 'member'}",
         "avg gap", "seconds", "speed-up"],
        [
            [a["method"], plus_minus(a, "forget_acc"), plus_minus(a, "retain_acc"),
             plus_minus(a, "test_acc"), plus_minus(a, "test_auc", 1, 3),
             plus_minus(a, "member_rate"), plus_minus(a, "lira_auc", 1, 3),
             gap_cell(a, "forget_acc"), gap_cell(a, "retain_acc"), gap_cell(a, "test_acc"),
             gap_cell(a, attack), avg_gap_cell(a), plus_minus(a, "seconds", 1, 2),
             speed(a["speedup"])]
            for a in rows
        ],
    )  # fmt: skip


def corrective_table(rows: list[dict]) -> str:
    """A corrective request: the evidence's flagged share, attack success, ToW, receipts."""
    asr = any(a.get("asr") is not None for a in rows)
    return markdown_table(
        ["method", "forget %", "retained %", "test %", "flagged %", *(["ASR %"] if asr else []),
         "ToW", "gap test", "gap flagged", *(["gap ASR"] if asr else []), "avg gap",
         "seconds", "speed-up", "receipts"],
        [
            [a["method"], plus_minus(a, "forget_acc"), plus_minus(a, "retain_acc"),
             plus_minus(a, "test_acc"), plus_minus(a, "flagged"),
             *([plus_minus(a, "asr")] if asr else []), plus_minus(a, "tow", 1, 3),
             gap_cell(a, "test_acc"), gap_cell(a, "flagged"),
             *([gap_cell(a, "asr")] if asr else []), avg_gap_cell(a),
             plus_minus(a, "seconds", 1, 2), speed(a["speedup"]), a.get("receipts", "")]
            for a in rows
        ],
    )  # fmt: skip


def corrective_targets(agg: list[dict], rows: list[dict], trained: list[dict]) -> dict:
    """The evidence issue's targets, each with what was measured and whether it is met."""

    def cell(setting: str, scenario: str, method: str) -> dict | None:
        return next((a for a in agg if (a["setting"], a["scenario"], a["method"])
                     == (setting, scenario, method)), None)  # fmt: skip

    out: dict = {"settings": []}
    for setting in dict.fromkeys(a["setting"] for a in agg if a["scenario"] in quality.CORRECTIVE):
        got: dict = {"setting": setting}
        mis = [cell(setting, "mislabeled", m) for m in ("auto", "retrain", "original")]
        if all(mis):
            auto, ref, original = mis
            got["mislabeled"] = {
                "original_flagged": original["flagged"],
                "auto_flagged": auto["flagged"], "retrain_flagged": ref["flagged"],
                "auto_test": auto["test_acc"], "retrain_test": ref["test_acc"],
                "met": abs(auto["flagged"] - ref["flagged"]) <= 0.03
                and abs(auto["test_acc"] - ref["test_acc"]) <= 0.005,
                "speedup": auto["speedup"], "receipts": auto["receipts"],
            }  # fmt: skip
        poi = [cell(setting, "poisoned", m) for m in ("auto", "retrain", "replay", "original")]
        if all(poi):
            auto, ref, replay, original = poi
            kept_replay = any(
                r["receipt"]["attempts"][-1:] == ["replay"]
                for r in rows
                if (r["setting"], r["scenario"], r["method"]) == (setting, "poisoned", "auto")
            )
            got["poisoned"] = {
                "original_asr": original["asr"], "auto_asr": auto["asr"],
                "retrain_asr": ref["asr"], "replay_asr": replay["asr"],
                "auto_met": auto["asr"] <= ref["asr"] + 0.02,
                "replay_met": replay["asr"] <= ref["asr"] + 0.02,
                "auto_kept_replay": kept_replay, "speedup": auto["speedup"],
                "receipts": auto["receipts"],
            }  # fmt: skip
        runs = [t[k] for t in trained if t["setting"] == setting for k in quality.CORRECTIVE
                if k in t and t[k].get("shadow_seconds")]  # fmt: skip
        got["shadow_cost"] = float(np.median([r["shadow_seconds"] / r["train_seconds"]
                                              for r in runs])) if runs else None  # fmt: skip
        got["evidence_cost"] = float(np.median([r["evidence_seconds"] / r["train_seconds"]
                                                for r in runs if r.get("evidence_seconds")])
                                     ) if runs else None  # fmt: skip
        out["settings"].append(got)
    claimed = [r for r in rows if (r.get("receipt") or {}).get("claims_forgotten")]
    out["receipts_claiming_forgotten"] = len(claimed)
    out["of_them_flagged"] = sum(1 for r in claimed if r.get("within_band") is False)
    return out


def targets_text(t: dict) -> str:
    lines = []
    for g in t["settings"]:
        lines.append(f"**{g['setting']}**\n")
        if m := g.get("mislabeled"):
            lines.append(
                f"- mislabeled: the original's forget set flagged {pct(m['original_flagged'])}%; "
                f"`auto` {pct(m['auto_flagged'])}% against `retrain`'s {pct(m['retrain_flagged'])}%"
                f" (within 3 points), test {pct(m['auto_test'])}% against "
                f"{pct(m['retrain_test'])}% (within 0.5): {'met' if m['met'] else 'MISSED'}; "
                f"{speed(m['speedup'])} faster than `retrain` ({m['receipts']})"
            )
        if p := g.get("poisoned"):
            escalates = (
                "auto never kept replay" if not p["auto_kept_replay"] else "auto KEPT replay"
            )
            lines.append(
                f"- poisoned: attack success {pct(p['original_asr'])}% originally; `auto` "
                f"{pct(p['auto_asr'])}%, `retrain` {pct(p['retrain_asr'])}% (+2 allowed): "
                f"{'met' if p['auto_met'] else 'MISSED'}; `replay` {pct(p['replay_asr'])}%: "
                f"{'within' if p['replay_met'] else 'over'} retrain + 2, {escalates} "
                f"({p['receipts']})"
            )
        if g["shadow_cost"] is not None:
            lines.append(
                f"- cost: 8 shadow models {g['shadow_cost']:.1f}× one training of the run; "
                f"scoring one request's evidence {100 * (g['evidence_cost'] or 0):.2f}% of one "
                "training (medians over the runs)"
            )
        lines.append("")
    lines.append(
        f"Receipts that say a request was forgotten: {t['receipts_claiming_forgotten']}; of "
        f"them, flagged beyond chance by the evidence when scored again: {t['of_them_flagged']}."
    )
    return "\n".join(lines)


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


# One at a time: on the 2-core machine the report is sized for, two processes with one
# torch thread each ran every unit 1.9-2.3x slower than one process alone, so `--jobs 2`
# bought nothing (benchmarks/README.md has the numbers).
DEFAULT_JOBS = 1


def jobs_text(jobs: int) -> str:
    return "this process" if jobs == 1 else f"one of {jobs} worker processes running at once"


Unit = tuple[quality.Setting, int]


def expected_seconds(s: quality.Setting, suffix: str) -> float:
    """A seed's time in the last report of this kind, to start the longest first."""
    try:
        last = json.loads((RESULTS / f"report{suffix}.json").read_text())["wall_seconds"]
        return float(last[s.name]) / len(s.seeds)
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def schedule(
    todo: list[Unit], jobs: int, threads: int, root: Path, keys: tuple, figure_args: tuple
) -> Iterator[tuple[tuple, dict]]:
    """Run each (setting, seed) of `todo` and the figures; yield each as it finishes, the
    figures as ((None, None), their results). With `jobs` > 1, in that many worker processes,
    the longest (by the last report) first; a later seed of a setting with LiRA shadows
    starts after the setting's first seed, whose shadows it waits for when it needs them."""

    def work(s: quality.Setting, seed: int) -> Path:
        return WORK / "matrix" / f"{s.slug}-{seed}"

    if jobs == 1:
        shelf = quality.ShadowShelf()
        for s, seed in todo:
            log(f"{s.name}, seed {seed}")
            yield (s, seed), quality.run_unit(s, seed, root, work(s, seed), keys, shelf, threads)
        log("figures")
        yield (None, None), figures.make_figures(*figure_args)
        return
    suffix = figure_args[2]
    shelf = quality.ShadowShelf(WORK / f"shadow-shelf{suffix}")
    shutil.rmtree(shelf.folder, ignore_errors=True)
    shelf.folder.mkdir(parents=True)
    for s in {s.name: s for s, _ in todo}.values():
        if (s, s.seeds[0]) not in todo:  # read from the cache: its later seeds train their own
            shelf.put(s, None, s.seeds[0])
    waiting: list = sorted(todo, key=lambda u: -expected_seconds(u[0], suffix)) + [None]
    context = multiprocessing.get_context("spawn")  # no forked copy of torch's thread pools
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        running: dict[Future, Unit | None] = {}
        try:
            while waiting or running:
                for unit in list(waiting):
                    if len(running) >= jobs:
                        break
                    first = None if unit is None else (unit[0], unit[0].seeds[0])
                    if unit != first and first in waiting:
                        continue  # its setting's first seed has not started
                    waiting.remove(unit)
                    if unit is None:
                        running[pool.submit(figures.make_figures, *figure_args)] = None
                        continue
                    s, seed = unit
                    log(f"{s.name}, seed {seed}: started")
                    args = (s, seed, root, work(s, seed), keys, shelf, threads)
                    running[pool.submit(quality.run_unit, *args)] = unit
                if not running:  # cannot happen: a first seed always waits first
                    raise RuntimeError(f"nothing can start of {len(waiting)} waiting")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    got = future.result()
                    if unit is not None:
                        log(f"{unit[0].name}, seed {unit[1]}: done in {got['seconds']:.0f} s")
                    yield (unit or (None, None)), got
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


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
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help="settings and seeds run at once, each in its own process with CPU cores / jobs "
        "torch threads (default 1: on 2 cores two at once were no faster)",
    )
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
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

    # -- quality matrix and figures ---------------------------------------------------
    jobs = args.jobs
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else torch.get_num_threads()
    cache = WORK / f"matrix-cache{suffix}"
    if not args.resume:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    units, reused = {}, []
    for s in settings:
        for seed in s.seeds:
            got = cached(cache, s, seed, keys)
            units[s.name, seed] = got
            if got is not None:
                log(f"{s.name}, seed {seed}: reusing the cache in {cache}")
                replaced = got.get("replaced")
                later = f" (its {' and '.join(replaced)} run from --runs)" if replaced else ""
                reused.append(f"{s.name}, seed {seed}{later}")
    todo = [(s, seed) for s in settings for seed in s.seeds if units[s.name, seed] is None]
    log(f"{len(todo)} settings and seeds to run, {jobs} at a time, {threads} torch thread(s) each")
    start = time.perf_counter()
    figure_args = (WORK / f"figures{suffix}", RESULTS, suffix, args.quick, threads)
    for (s, seed), got in schedule(todo, jobs, threads, root, keys, figure_args):
        if s is None:  # the figures
            fig = got
            continue
        name = f"{s.slug}-{seed}" + (f"-{args.runs}" if args.runs else "")
        (cache / f"{name}.json").write_text(json.dumps(got))
        units[s.name, seed] = got
    elapsed = time.perf_counter() - start
    rows, trained, timings = [], [], {}
    for s in settings:
        timings[s.name] = 0.0
        for seed in s.seeds:
            rows += units[s.name, seed]["rows"]
            trained.append(units[s.name, seed]["trained"])
            timings[s.name] += units[s.name, seed]["seconds"]
    timings["figures"] = fig["seconds"]
    fig1, fig4 = fig["figure1"], fig["figure4"]
    ran = {(s.name, seed) for s, seed in todo}
    reused_seconds = sum(got["seconds"] for key, got in units.items() if key not in ran)
    agg = quality.aggregate(rows)
    summ = quality.summary(agg)
    targets = corrective_targets(agg, rows, trained)

    # -- costs ----------------------------------------------------------------------
    if args.rerun_costs:
        t0 = time.perf_counter()
        costs.rerun(log)
        timings["cost benchmarks"] = time.perf_counter() - t0
    cost = costs.collect()

    # -- report ---------------------------------------------------------------------
    env = {**machine(), "torch_threads": threads, "jobs": jobs}
    wall = elapsed + timings.get("cost benchmarks", 0.0)  # this command's own time
    gap_table, speed_rows = summary_table(summ)
    md = [
        f"# unlearn benchmark report{' (quick)' if args.quick else ''}"
        + (f", settings matching '{args.settings}'" if args.settings else "")
        + "\n",
        f"{env['date']} · unlearn {env['unlearn']} · torch {env['torch']} · zarr {env['zarr']}"
        f" · Python {env['python']} · {env['cpu_count']} CPU cores ({env['processor']}) · "
        f"{jobs} at a time, {threads} torch thread{'s' if threads > 1 else ''} each · "
        f"wall time {wall / 60:.1f} min\n",
        "Command: `python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --settings '{args.settings}'" if args.settings else "")
        + (f" --jobs {jobs}" if jobs != DEFAULT_JOBS else "")
        + "`. "
        "Every number below was measured in this run except the cost matrix, whose sources "
        f"are named. Each setting and seed, and the figures, ran in {jobs_text(jobs)}; "
        "seconds and speed-ups are measured under that load (a method and the `retrain` it "
        "is compared with ran in the same process). Time per part, summed over its seeds: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
        + "."
        + (
            " With `--resume`, these runs were read from the cache of earlier runs of this "
            f"script (their own times, {reused_seconds / 60:.1f} min, are not in the wall "
            "time): " + "; ".join(reused) + "."
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
        "\n## Corrective requests: the targets\n",
        targets_text(targets),
        "\n## `auto` against the best single method (average gap, points)\n",
        "Issue 18's target (within 0.5 points of the best single method) is retired: random "
        "requests are judged against the floor, and `auto` on the corrective requests above. "
        "The table stays for reference.\n",
        auto_text(quality.auto_check(agg, rows)),
        "\n## Figure 1 analogue: through training and the request\n",
        figure1_text(fig1, fig["png1"]),
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
        "\n" + (f"![Figure 4]({fig['png4']})" if fig["png4"] else "(matplotlib missing: no plot)"),
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
        "corrective_targets": targets,
        "reused": reused,
        "figure1": {**fig1, "train": fig["train"]},
        "figure4": fig4,
        "costs": cost,
        "wall_seconds": {**timings, "total": wall, "reused": reused_seconds},
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
    for key in [k for k in keys if k in s.runs]:
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
    if got is None or any(key not in got["trained"] for key in keys if key in s.runs):
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
