"""Unlearning methods behind one registry; importing this module registers them all."""

from unlearn_cli.methods import (  # noqa: F401  (importing registers them)
    amnesiac,
    auto,
    finetune,
    label_flip,
    optimize,
    partial_amnesiac,
    pgu,
    replay,
    retrain,
)
from unlearn_cli.methods.base import (
    METHODS,
    Cost,
    ForgetContext,
    ForgetOutcome,
    Method,
    PlanFacts,
    RequestFacts,
    Rung,
)

__all__ = [
    "METHODS",
    "Cost",
    "ForgetContext",
    "ForgetOutcome",
    "Method",
    "PlanFacts",
    "RequestFacts",
    "Rung",
]
