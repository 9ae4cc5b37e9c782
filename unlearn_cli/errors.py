"""The one error hierarchy. Every known failure is an `UnlearnError` with a hint.

The CLI catches `UnlearnError` in one place and turns it into one line on stderr
(plus the hint) and exit code 1; anything else is a bug and shows a traceback.
"""

from __future__ import annotations


class UnlearnError(Exception):
    """A known, user-fixable failure: what went wrong, and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidParameterError(UnlearnError, ValueError):
    """A parameter value outside its declared constraints."""


class UnknownNameError(InvalidParameterError):
    """A registry lookup for a name that is not registered."""


class DataNotFoundError(UnlearnError):
    """Dataset files are missing where they are expected."""


class DataError(UnlearnError):
    """A dataset file cannot be decoded, or holds values a model cannot train on."""


class RunError(UnlearnError):
    """A run directory is missing, incomplete, or from an incompatible version."""


class StoreError(UnlearnError):
    """The update store is missing, corrupt, or does not belong to the model."""


class RequestError(UnlearnError):
    """A deletion request names ids or classes the dataset does not have."""
