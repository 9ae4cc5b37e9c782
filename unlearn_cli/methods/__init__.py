"""Unlearning methods behind one registry; importing this module registers them all."""

from unlearn_cli.methods import amnesiac, partial_amnesiac, retrain  # noqa: F401  (register)
from unlearn_cli.methods.base import METHODS, ForgetContext, ForgetOutcome, Method

__all__ = ["METHODS", "ForgetContext", "ForgetOutcome", "Method"]
