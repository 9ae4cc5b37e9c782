"""`auto`: pick the method from what the request touches and what is at hand.

The rules, in order (the README's "Which method when" states the same table):
1. `-p exact=true`: `retrain`, the exact reference.
2. The training data is gone: `partial-amnesiac`, which needs only the update store.
3. No usable recorded trajectory (trained with --no-record, or a version rebuilt by
   retrain): `optimize -p partial=true`.
4. A class request (it takes every training sample of its classes, named by --class
   or by ids): `replay` when at most `max_class_replay_share` of the recorded steps are
   affected (a rare class: its batches are few, and optimizing leaves a residue that
   test AUC shows), else `optimize -p partial=true` (a class in nearly every batch,
   where replaying costs more than retraining).
5. A sample request: `replay` when at most `max_replay_share` of the steps are
   affected, else `optimize -p partial=true`, which was as close to `retrain` there.

The thresholds come from the quality matrix and `benchmarks/bench_replay.py`
(`benchmarks/auto_rules.py` replays candidate rules on the matrix; README, "Which
method when"). The receipt's `auto` says which method ran and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearn_cli.errors import RequestError
from unlearn_cli.methods.base import ForgetContext, ForgetOutcome, Method, RequestFacts, register
from unlearn_cli.params import Interval, param

# Sample requests. benchmarks/results/replay.md (MNIST/LeNet): replay was 9.3x faster than
# retrain at 5.2% of steps affected, 1.3x at 42% and slower at 80% (a re-run step costs
# about twice a training step: subtraction, data gathering, recording). 10% keeps it about
# 5x faster; above it, partial `optimize` was within 0.3 points of retrain on random
# requests. Between 5% and 10% neither is steadily closer to retrain: replay.md's 100
# samples (5.2%) gave replay 1.00 points and optimize 0.05, the matrix's AlexNet 10
# samples (6.4%) 3.7 and 0.5, the demo's 3 samples (6.7%, by hand) 0.2 and 1.1.
MAX_REPLAY_SHARE = 0.10
# Class requests. The matrix's rare classes touch 11-56% of the steps; replay averaged 0.44
# points from retrain there, partial optimize 1.06 (results/auto_rules.md). Replay still
# beat retraining at 56% (1.3x) and lost at 80% (0.7x, replay.md); whole classes touch
# 96-100%.
MAX_CLASS_REPLAY_SHARE = 0.60
PARTIAL_OPTIMIZE = ("optimize", {"partial": True})


@dataclass(frozen=True)
class AutoParams:
    exact: bool = param(False, "exact removal: choose retrain")
    max_replay_share: float = param(
        MAX_REPLAY_SHARE, "samples: replay when at most this share of the steps is affected"
    )
    max_class_replay_share: float = param(
        MAX_CLASS_REPLAY_SHARE, "whole classes: replay when at most this share is affected"
    )

    constraints: ClassVar[dict] = {
        "max_replay_share": Interval(float, 0, 1, closed="both"),
        "max_class_replay_share": Interval(float, 0, 1, closed="both"),
    }


def choose(params: AutoParams, facts: RequestFacts) -> tuple[str, dict, str]:
    """(method, its parameters, why) for a request with these facts."""
    if params.exact:
        return "retrain", {}, "exact removal was asked for (-p exact=true)"
    if not facts.data_available:
        if facts.store_usable:
            return "partial-amnesiac", {}, "the training data is not at hand; the store suffices"
        raise RequestError(
            "auto: the training data is not at hand and this version has no recorded "
            "trajectory to subtract, so no method can forget here.",
            hint="point --data-root at the training data, or forget --from an earlier version",
        )
    if not facts.store_usable:
        return (*PARTIAL_OPTIMIZE, "this version has no recorded trajectory to subtract")
    share = facts.affected_share or 0.0
    if facts.whole_class:
        limit = params.max_class_replay_share
        if share <= limit:
            why = f"a whole class in {share:.1%} of the recorded steps (at most {limit:.0%})"
            return "replay", {}, why + ": a rare class, whose batches are few"
        why = f"a whole class in {share:.1%} of the recorded steps (over {limit:.0%})"
        return (*PARTIAL_OPTIMIZE, why + ": replaying nearly every batch costs a retrain")
    limit = params.max_replay_share
    if share <= limit:
        return "replay", {}, f"{share:.1%} of the recorded steps are affected (at most {limit:.0%})"
    why = f"{share:.1%} of the recorded steps are affected (over {limit:.0%})"
    return (*PARTIAL_OPTIMIZE, why + ": replay's cost grows with that share")


def forget(ctx: ForgetContext, params: AutoParams) -> ForgetOutcome:
    raise RuntimeError("auto delegates to another method before any work; it never runs")


METHOD = register(
    Method(
        name="auto",
        params=AutoParams,
        forget=forget,
        summary="choose replay, optimize (partial), partial-amnesiac or retrain from the "
        "request and what is at hand; the receipt says which and why",
        delegate=choose,
    )
)
