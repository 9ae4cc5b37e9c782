"""Issue 47, the selection: what a carried per-layer threshold would save against today's
exact top-k at every step, and what it keeps instead, on real updates.

Real MNIST, the default record (depth schedule, keep 0.2, float16): each model trains for
`--steps` steps at batch 32 and every step's update (theta_after - theta_before, as the
recorder forms it) is kept in memory. Then, on the same updates, side by side:

- `exact`: today's selection (`prune_delta`: per tensor the k largest |delta|, a sampled
  guess and an exact trim), timed per step.
- `carried/N`: per tensor a threshold t; a step keeps every entry with |delta| >= t (one
  pass, a variable count). Every N steps an exact selection refreshes t to the k-th
  largest |delta|; between refreshes t follows the count, t <- t * (count / k) ** 0.5
  (a step that kept twice k raises t by 1.41x). Timed per step, refreshes included.
- `guided`: today's exact top-k, with the sampled guess replaced by one carried from the
  step before (its k-th largest |delta| times 0.9, so that about 1.1 k entries pass); the
  entries above it are trimmed to k exactly, and where fewer than k pass, today's
  selection runs. It keeps exactly what `exact` keeps (checked), in the same format.
- `bounded/N`: the same, but a count outside k * (1 -+ 0.25) is corrected on the step: over
  it, the candidates are trimmed to k exactly (a partition of the few kept); under it, the
  exact selection runs and refreshes t. Tensors of at most 4,096 entries (biases, small
  layers) are always selected exactly, as today.

Then, to set the selection against the rest of a recorded step, `bench_store.py`'s
profile of where a recorded step's time goes (LeNet and mlp, batch 32, two shards), and
what the step would cost with each variant's selection in place of today's (the other
parts as measured): the projected ratio to a plain step, against issue 47's targets
(LeNet 1.10, mlp 1.25).

A threshold selection keeps exactly the largest entries of its step, up to its own count:
what it gives up is the count. Reported per variant: ms per step (median of `--rounds`
passes over the updates, variants alternated), the kept count against k (share of k per
tensor and step: mean, 5th and 95th percentile, min and max, over all tensors), the
entries kept in all against exact's (a proxy for the store's size), and the share of the
exact top-k's squared magnitude that the kept set holds (per step and tensor: mean and
5th percentile).

    python benchmarks/bench_selection.py [--steps 400] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_store import PARTS, where_time_goes
from common import data_root, markdown_table, write_results

from unlearn_cli.data import load_dataset
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.ops.train import RecordConfig
from unlearn_cli.store import make_layout
from unlearn_cli.store.layout import StoreLayout, parse_schedule
from unlearn_cli.store.recorder import flat_params
from unlearn_cli.store.selection import _top_k_mask as top_k_mask
from unlearn_cli.store.selection import prune_delta, top_k_positions
from unlearn_cli.train_config import TrainConfig, optimizer_for
from unlearn_cli.training import Hooks, epoch_batches, fit

REFRESH = (8, 32)  # steps between exact refreshes of the carried thresholds
FOLLOW = 0.5  # exponent of the count's correction between refreshes
GUESS_MARGIN = 0.9  # guided: the carried guess, times the last step's k-th |delta|
GUESS_MIN_SIZE = 4096  # guided and bounded: smaller tensors are selected exactly at once
TOLERANCE = 0.25  # bounded: a count outside k * (1 -+ this) is corrected that step


def updates(model_name: str, steps: int) -> tuple[StoreLayout, np.ndarray]:
    """(the default record's layout, every step's flat update as rows of a float32 array)."""
    torch.manual_seed(0)
    data = load_dataset("mnist", data_root())
    model = create_model(model_name, ModelSpec(data.channels, data.image_size, data.num_classes))
    optimizer = optimizer_for(TrainConfig(dataset="mnist", model=model_name), model)
    rec = RecordConfig()
    layout = make_layout(model, parse_schedule(rec.schedule, rec.keep), rec.delta_dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = np.empty((steps, layout.num_params), np.float32)
    last = flat_params(params).clone()

    def on_step(info) -> None:
        now = flat_params(params)
        rows[info.batch.step] = (now - last).numpy()
        last.copy_(now)

    batches = epoch_batches(torch.arange(len(data.y_train)), 32, 100, 0)
    fit(model, optimizer, data.x_train, data.y_train,
        (next(batches) for _ in range(steps)), Hooks(on_step=on_step))  # fmt: skip
    return layout, rows


def exact(layout: StoreLayout, rows: np.ndarray) -> tuple[float, list[list[np.ndarray]]]:
    """Seconds per step, and each step's kept positions per tensor (local to the tensor)."""
    kept = []
    start = time.perf_counter()
    for row in rows:
        idx = prune_delta(torch.from_numpy(row), layout)[0].numpy()
        kept.append(idx)
    seconds = (time.perf_counter() - start) / len(rows)
    per_tensor = []
    for idx in kept:
        parts, at = [], 0
        for layer in layout.layers:
            parts.append(idx[at : at + layer.k] - layer.offset)
            at += layer.k
        per_tensor.append(parts)
    return seconds, per_tensor


def per_tensor(
    layout: StoreLayout, rows: np.ndarray, choose: Callable[[int, int, np.ndarray, int], np.ndarray]
) -> tuple[float, list[list[np.ndarray]]]:
    """Seconds per step and kept positions per tensor, `choose(step, tensor, |delta|, k)`
    selecting within each tensor that keeps fewer than all of its entries."""
    kept: list[list[np.ndarray]] = []
    start = time.perf_counter()
    for step, row in enumerate(rows):
        magnitude = np.abs(row)
        parts = []
        for t, layer in enumerate(layout.layers):
            seg = magnitude[layer.offset : layer.offset + layer.numel]
            whole = layer.k == layer.numel
            parts.append(np.arange(layer.numel) if whole else choose(step, t, seg, layer.k))
        kept.append(parts)
    return (time.perf_counter() - start) / len(rows), kept


def carried(
    layout: StoreLayout, rows: np.ndarray, refresh: int, bounded: bool = False
) -> tuple[float, list[list[np.ndarray]]]:
    """Thresholds carried between exact refreshes every `refresh` steps (`bounded`:
    counts kept within the tolerance)."""
    thresholds = np.zeros(len(layout.layers))

    def choose(step: int, t: int, seg: np.ndarray, k: int) -> np.ndarray:
        if step % refresh == 0 or (bounded and seg.size <= GUESS_MIN_SIZE):
            local = top_k_positions(seg, k)
            thresholds[t] = seg[local].min()
            return local
        local = np.flatnonzero(seg >= thresholds[t])
        count = max(local.size, 1)
        if bounded and count > k * (1 + TOLERANCE):
            local = local[np.sort(np.argpartition(-seg[local], k)[:k])]
        elif bounded and count < k * (1 - TOLERANCE):
            local = top_k_positions(seg, k)
            thresholds[t] = seg[local].min()
            count = k
        thresholds[t] *= (count / k) ** FOLLOW
        return local

    return per_tensor(layout, rows, choose)


def guided(layout: StoreLayout, rows: np.ndarray) -> tuple[float, list[list[np.ndarray]]]:
    """Exact top-k from a guess carried from the step before."""
    guesses = np.zeros(len(layout.layers))

    def choose(step: int, t: int, seg: np.ndarray, k: int) -> np.ndarray:
        local = None
        if guesses[t] > 0 and seg.size > GUESS_MIN_SIZE:
            candidates = np.flatnonzero(seg >= guesses[t])
            if candidates.size >= k:
                local = candidates[top_k_mask(seg[candidates], k)]
        if local is None:
            local = top_k_positions(seg, k)
        guesses[t] = GUESS_MARGIN * seg[local].min()
        return local

    return per_tensor(layout, rows, choose)


def quality(layout: StoreLayout, rows: np.ndarray, kept, reference) -> dict:
    """The kept counts against k, and the share of the exact top-k's squared magnitude
    each kept set holds."""
    shares, mass = [], []
    total = exact_total = 0
    for row, mine, ref in zip(rows, kept, reference, strict=True):
        for layer, a, b in zip(layout.layers, mine, ref, strict=True):
            if layer.k == layer.numel:
                continue
            seg = row[layer.offset : layer.offset + layer.numel].astype(np.float64) ** 2
            shares.append(a.size / layer.k)
            top = seg[b].sum()
            mass.append(min(1.0, seg[a].sum() / top) if top > 0 else 1.0)
            total += a.size
            exact_total += b.size
    s, m = np.array(shares), np.array(mass)
    return {
        "count_share_mean": float(s.mean()),
        "count_share_p5": float(np.percentile(s, 5)),
        "count_share_p95": float(np.percentile(s, 95)),
        "count_share_min": float(s.min()),
        "count_share_max": float(s.max()),
        "entries_vs_exact": total / exact_total,
        "topk_mass_mean": float(m.mean()),
        "topk_mass_p5": float(np.percentile(m, 5)),
    }


def compare(model_name: str, steps: int, rounds: int) -> dict:
    layout, rows = updates(model_name, steps)
    variants = ["exact", "guided"]
    variants += [f"{kind}/{n}" for kind in ("carried", "bounded") for n in REFRESH]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    kept: dict[str, list] = {}
    for r in range(rounds):  # alternated, so the machine's drift hits every variant
        for v in variants if r % 2 == 0 else variants[::-1]:
            if v == "exact":
                sec, kept[v] = exact(layout, rows)
            elif v == "guided":
                sec, kept[v] = guided(layout, rows)
            else:
                kind, n = v.split("/")
                sec, kept[v] = carried(layout, rows, int(n), bounded=kind == "bounded")
            seconds[v].append(sec)
    same = all(
        np.array_equal(a, b)
        for mine, ref in zip(kept["guided"], kept["exact"], strict=True)
        for a, b in zip(mine, ref, strict=True)
    )
    out = {"model": model_name, "steps": steps, "rounds": rounds, "variants": {}}
    out["guided_equals_exact"] = same

    for v in variants:
        ms = 1000 * float(np.median(seconds[v]))
        out["variants"][v] = {
            "ms_per_step": ms,
            "ms_per_step_all": [1000 * s for s in seconds[v]],
            **quality(layout, rows, kept[v], kept["exact"]),
        }
    base = out["variants"]["exact"]["ms_per_step"]
    for v in variants:
        out["variants"][v]["time_vs_exact"] = out["variants"][v]["ms_per_step"] / base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps, rounds = (60, 2) if args.quick else (args.steps, args.rounds)
    results = [compare(m, steps, rounds) for m in ("lenet", "mlp")]
    profiles = {m: where_time_goes(m, 1 if args.quick else 2) for m in ("lenet", "mlp")}
    targets = {"lenet": 1.10, "mlp": 1.25}
    projected = []
    for res in results:
        prof = profiles[res["model"]]
        parts = prof["ms_per_step"]
        plain = prof["ms_per_step_plain"]
        others = sum(parts[p] for p in PARTS if p != "selection")
        measured = res["variants"]["exact"]["ms_per_step"]
        for v, d in res["variants"].items():
            # the profile's own selection time, scaled by this variant's ratio to exact
            selection = parts["selection"] * d["ms_per_step"] / measured
            ratio = (plain + others + selection) / plain
            d["projected_ratio"] = ratio
            projected.append([res["model"], v, f"{selection:.3f}", f"{ratio:.3f}",
                              targets[res["model"]]])  # fmt: skip
        free = (plain + others) / plain  # no selection at all: the other parts' floor
        res["projected_ratio_without_selection"] = free
        projected.append([res["model"], "none (a free selection)", "0", f"{free:.3f}",
                          targets[res["model"]]])  # fmt: skip
    rows = []
    for res in results:
        for v, d in res["variants"].items():
            rows.append([
                res["model"], v, f"{d['ms_per_step']:.3f}", f"{d['time_vs_exact']:.2f}",
                f"{d['count_share_mean']:.2f} ({d['count_share_p5']:.2f}-"
                f"{d['count_share_p95']:.2f}; {d['count_share_min']:.2f}-"
                f"{d['count_share_max']:.2f})",
                f"{d['entries_vs_exact']:.2f}",
                f"{d['topk_mass_mean']:.3f} ({d['topk_mass_p5']:.3f})",
            ])  # fmt: skip
    table = markdown_table(
        [
            "model",
            "selection",
            "ms / step",
            "× exact",
            "kept / k: mean (p5-p95; min-max)",
            "entries × exact",
            "top-k mass held: mean (p5)",
        ],
        rows,
    )
    notes = "\n".join(
        f"\n{r['model']}: guided selected what exact selected at every step: "
        f"{r['guided_equals_exact']}."
        for r in results
    )
    profile_table = markdown_table(
        ["model", "plain step ms", *PARTS, "recorded loop ms"],
        [
            [m, f"{p['ms_per_step_plain']:.2f}", *(f"{p['ms_per_step'][x]:.3f}" for x in PARTS),
             f"{p['ms_per_step_recorded_loop']:.2f}"]
            for m, p in profiles.items()
        ],
    )  # fmt: skip
    projection_table = markdown_table(
        ["model", "selection", "selection ms (projected)", "recorded ÷ plain", "target"],
        projected,
    )
    md = "\n\n".join(
        [
            "## Selection on real updates (ms per step, kept counts, top-k mass)\n",
            table + notes,
            "## Where a recorded step's time goes (bench_store.where_time_goes, ms per step)\n",
            profile_table,
            "The writer's part runs on its own thread, overlapping training (on 2 cores it "
            "competes with torch's threads); counting it whole makes the projection an upper "
            "bound.",
            "## A recorded step with each selection (projected)\n",
            projection_table,
        ]
    )
    payload = {"results": results, "profiles": profiles, "quick": args.quick}
    write_results("selection_quick" if args.quick else "selection", payload, md)


if __name__ == "__main__":
    main()
