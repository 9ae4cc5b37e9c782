"""Models behind one registry. Adding one is a file plus an import line here."""

from unlearn_cli.models import alexnet, convnet, lenet, mlp, resnet9  # noqa: F401  (registers)
from unlearn_cli.models.base import (
    MODELS,
    ModelSpec,
    architecture_fingerprint,
    create_model,
    model_builder,
)

__all__ = ["MODELS", "ModelSpec", "architecture_fingerprint", "create_model", "model_builder"]
