"""`auto`: pick the method from what the request touches and what is at hand.

The rules, in order (the README's "Which method when" states the same table):
1. `-p exact=true`: `retrain`, the exact reference.
2. The training data is gone: `partial-amnesiac`, which needs only the update store.
3. No usable recorded trajectory (trained with --no-record, or a version rebuilt by
   retrain), or a whole class (it sits in nearly every batch):
   `optimize -p partial=true`.
4. At most `max_replay_share` of the recorded steps affected: `replay`, whose cost is
   that share of a training run and whose quality is that of retraining.
5. Otherwise `optimize -p partial=true`: replaying most steps costs nearly a retrain.

The default threshold comes from `benchmarks/bench_replay.py` (README, "Which method
when"). The receipt's `auto` says which method ran and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearn_cli.errors import RequestError
from unlearn_cli.methods.base import ForgetContext, ForgetOutcome, Method, RequestFacts, register
from unlearn_cli.params import Interval, param

# benchmarks/results/replay.md (MNIST/LeNet): replay was 9.3x faster than retrain at 5.2%
# of steps affected, 1.3x at 42% and slower at 80% (a re-run step costs about twice a
# training step: subtraction, data gathering, recording). 10% keeps it about 5x faster;
# above it, partial `optimize` was within 0.3 points of retrain on random requests.
MAX_REPLAY_SHARE = 0.10
PARTIAL_OPTIMIZE = ("optimize", {"partial": True})


@dataclass(frozen=True)
class AutoParams:
    exact: bool = param(False, "exact removal: choose retrain")
    max_replay_share: float = param(
        MAX_REPLAY_SHARE, "replay when at most this share of the recorded steps is affected"
    )

    constraints: ClassVar[dict] = {"max_replay_share": Interval(float, 0, 1, closed="both")}


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
    if facts.whole_class:
        return (*PARTIAL_OPTIMIZE, "a whole class sits in nearly every batch")
    share, limit = facts.affected_share or 0.0, params.max_replay_share
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
