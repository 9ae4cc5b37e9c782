"""Unlearning methods behind one registry; importing this module registers them all."""

from unlearn_cli.methods import (  # noqa: F401  (importing registers them)
    amnesiac,
    finetune,
    label_flip,
    optimize,
    partial_amnesiac,
    pgu,
    retrain,
)
from unlearn_cli.methods.base import METHODS, ForgetContext, ForgetOutcome, Method

__all__ = ["METHODS", "ForgetContext", "ForgetOutcome", "Method"]
