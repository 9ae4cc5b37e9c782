"""unlearn: machine unlearning for PyTorch image classifiers.

Train while recording layer-wise pruned updates, then honour deletion requests
by subtracting the updates of the steps that saw the deleted samples.
"""

from typing import TYPE_CHECKING

from unlearn_cli.version import __version__ as __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports it
    from unlearn_cli.api import (
        ModelSpec,
        RunRecorder,
        create_model,
        evaluate,
        export,
        forget,
        load_dataset,
        load_model,
        log,
        record,
        retire,
        storage_report,
        train,
        train_shadows,
        verify,
    )

# The Python API (unlearn_cli/api.py), imported on first use so `import unlearn_cli` stays light.
__all__ = [
    "ModelSpec",
    "RunRecorder",
    "create_model",
    "evaluate",
    "export",
    "forget",
    "load_dataset",
    "load_model",
    "log",
    "record",
    "retire",
    "storage_report",
    "train",
    "train_shadows",
    "verify",
]


def __getattr__(name: str):
    if name in __all__:
        from unlearn_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'unlearn_cli' has no attribute {name!r}")
