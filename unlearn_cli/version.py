"""The package version (one place: `unlearn --version`, run.json, exports)."""

__version__ = "0.1.0"
