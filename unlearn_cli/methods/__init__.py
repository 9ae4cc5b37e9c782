"""Unlearning methods behind one registry (see base.py)."""

from unlearn_cli.methods.base import METHODS

__all__ = ["METHODS"]
