"""The method registry. Methods arrive with `unlearn forget`."""

from __future__ import annotations

from unlearn_cli.registry import Registry

METHODS: Registry = Registry("method")
