"""`auto`: pick the methods to try from the request and what is at hand.

It gives a ladder: the first method runs; the next runs only while a result changes
nothing or, where the run has shadow models, the per-example evidence still flags more of
the forget set than chance (`ops/forget.py` climbs it and lists every attempt in the
receipt). `retrain`, exact, ends every ladder that has data.

The first method, in order (the README's "Which method when" states the same table):
1. `-p exact=true`: `retrain`.
2. The training data is gone: `partial-amnesiac`, which needs only the update store.
3. A class request (every training sample of its classes, named by --class or by ids):
   `replay` when at most `max_class_replay_share` of the recorded steps are affected (a
   rare class: its batches are few), else `optimize -p partial=true` (a class in nearly
   every batch, where replaying costs more than retraining). Forget accuracy, which its
   stopping rule checks, is the measure of a class's removal. Without a recorded
   trajectory: `optimize -p partial=true`.
4. A sample request touching at most `max_replay_share` of the steps: `replay`, which
   removes the samples' steps and re-runs them (its result rests on no target).
5. A larger sample request whose forget set the evidence flags in the starting version,
   mostly (at least `min_flagged_share`: memorized samples, as mislabeled ones are):
   `optimize` without the entropy term, with a descent term (weight 0.5) on as many
   retained samples and 5x the run's learning rate (`MEMORIZED_OPTIMIZE`), until the
   evidence flags no more of them than chance. The entropy term raises a mislabeled
   sample's confidence in its wrong label toward 1/K, which is what memorization looks
   like: with it the evidence flagged more after than before (96.5% -> 99% on MNIST/LeNet).
6. Any other sample request: `retrain`. Without shadows nothing can check an approximate
   method's result; with them, a forget set the evidence mostly does not see in the
   starting version cannot be checked either: samples the model generalizes, or poisoned
   ones, whose trigger the shadows learn from the other poisoned samples (14% and 32% of
   MNIST/LeNet's poisoned forget sets flagged under two seeds' originals, 70% under the
   third; partial `optimize` left 56% attack success with 0.7% flagged).

The thresholds come from the quality matrix (`benchmarks/run.py`, with its corrective
requests) and `benchmarks/bench_replay.py` (README, "Which method when").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearn_cli.errors import RequestError
from unlearn_cli.methods.base import (
    ForgetContext,
    ForgetOutcome,
    Method,
    RequestFacts,
    Rung,
    register,
)
from unlearn_cli.params import Interval, param

# Sample requests. benchmarks/results/replay.md (MNIST/LeNet): replay was 9.3x faster than
# retrain at 5.2% of steps affected, 1.3x at 42% and slower at 80% (a re-run step costs
# about twice a training step: subtraction, data gathering, recording). 10% keeps it about
# 5x faster. Above it replay drifts from retraining: on a poisoned 1% (28% of the steps) it
# left 34% attack success where retrain left 0.2% (results/poison_replay.md).
MAX_REPLAY_SHARE = 0.10
# Class requests. The matrix's rare classes touch 11-56% of the steps; replay averaged 0.44
# points from retrain there, partial optimize 1.06 (the report of 2026-12-05). Replay still
# beat retraining at 56% (1.3x) and lost at 80% (0.7x, replay.md); whole classes touch
# 96-100%.
MAX_CLASS_REPLAY_SHARE = 0.60
# The evidence sees memorized samples: mislabeled MNIST digits were 87% flagged under the
# original model (3 seeds), poisoned ones 14-70%, random ones about the false-positive rate
# (results/report.md, the corrective requests). Where it sees most of the forget set it
# can check that an approximate method removed what it saw.
MIN_FLAGGED_SHARE = 0.5
PARTIAL_OPTIMIZE = {"partial": True}
# Mislabeled MNIST digits (2% of 10,000, LeNet, 3 seeds in results/report.md): flagged
# 86.8% -> 1.8%, test accuracy 98.0% against retrain's 97.8%, 2.7x faster.
# A retained weight of 1 overshot retrain's test accuracy (98.4%); the partial mask at 5x
# ended 20 epochs with 5.5% still flagged.
MEMORIZED_OPTIMIZE = {"entropy_weight": 0.0, "retain_weight": 0.5, "lr_factor": 5.0, "epochs": 40}
SHADOWS_HINT = "`unlearn shadows RUN -k 8` builds the evidence that can verify cheaper methods"


@dataclass(frozen=True)
class AutoParams:
    exact: bool = param(False, "exact removal: choose retrain")
    max_replay_share: float = param(
        MAX_REPLAY_SHARE, "samples: replay when at most this share of the steps is affected"
    )
    max_class_replay_share: float = param(
        MAX_CLASS_REPLAY_SHARE, "whole classes: replay when at most this share is affected"
    )
    min_flagged_share: float = param(
        MIN_FLAGGED_SHARE,
        "samples over max_replay_share: optimize when the evidence flags at least "
        "this share of them (else retrain)",
    )

    constraints: ClassVar[dict] = {
        "max_replay_share": Interval(float, 0, 1, closed="both"),
        "max_class_replay_share": Interval(float, 0, 1, closed="both"),
        "min_flagged_share": Interval(float, 0, 1, closed="both"),
    }


def choose(params: AutoParams, facts: RequestFacts) -> list[Rung]:
    """The methods to try, in order, for a request with these facts."""
    if params.exact:
        return [Rung("retrain", {}, "exact removal was asked for (-p exact=true)")]
    if not facts.data_available:
        if facts.store_usable:
            why = "the training data is not at hand; the store suffices"
            return [Rung("partial-amnesiac", {}, why)]
        raise RequestError(
            "auto: the training data is not at hand and this version has no recorded "
            "trajectory to subtract, so no method can forget here.",
            hint="point --data-root at the training data, or forget --from an earlier version",
        )
    first = first_rung(params, facts)
    retrain = Rung("retrain", {}, "exact: what is left when a cheaper method did not do")
    return [first] if first.method == "retrain" else [first, retrain]


def first_rung(params: AutoParams, facts: RequestFacts) -> Rung:
    share = facts.affected_share
    if facts.whole_class:
        if not facts.store_usable:
            why = "a whole class, and this version has no recorded trajectory to replay"
            return Rung("optimize", PARTIAL_OPTIMIZE, why)
        limit = params.max_class_replay_share
        if share is not None and share <= limit:
            why = f"a whole class in {share:.1%} of the recorded steps (at most {limit:.0%})"
            return Rung("replay", {}, why + ": a rare class, whose batches are few")
        why = f"a whole class in {share or 0:.1%} of the recorded steps (over {limit:.0%})"
        return Rung("optimize", PARTIAL_OPTIMIZE, why + ": replaying every batch costs a retrain")
    limit = params.max_replay_share
    if facts.store_usable and share is not None and share <= limit:
        why = f"{share:.1%} of the recorded steps are affected (at most {limit:.0%})"
        return Rung("replay", {}, why + ": replay removes them and re-runs them")
    where = (
        "this version has no recorded trajectory to replay"
        if not facts.store_usable
        else f"{share or 0:.1%} of the recorded steps are affected (over {limit:.0%})"
    )
    flagged = facts.flagged_share
    if flagged is None:
        return Rung(
            "retrain",
            {},
            f"{where}, and without shadow models nothing could check "
            f"a cheaper method's result ({SHADOWS_HINT})",
        )
    if facts.flagged_beyond_chance and flagged >= params.min_flagged_share:
        why = (
            f"{where}; the evidence flags {flagged:.0%} of the samples (memorized), so "
            "optimize trains until it flags no more than chance, checked"
        )
        return Rung("optimize", MEMORIZED_OPTIMIZE, why)
    return Rung(
        "retrain",
        {},
        f"{where}, and the evidence flags {flagged:.0%} of the samples "
        f"(under {params.min_flagged_share:.0%}): it cannot see what a cheaper method "
        "would have to remove",
    )


def forget(ctx: ForgetContext, params: AutoParams) -> ForgetOutcome:
    raise RuntimeError("auto delegates to other methods before any work; it never runs")


METHOD = register(
    Method(
        name="auto",
        params=AutoParams,
        forget=forget,
        summary="try replay, optimize (partial), partial-amnesiac or retrain from the request, "
        "what is at hand and the evidence; the receipt lists every attempt and why",
        delegate=choose,
    )
)
