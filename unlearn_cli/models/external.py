"""Models from outside the registry: `torchvision:<name>` and the user's `<module>:<callable>`.

- `torchvision:<name>`: any torchvision classification builder, built without weights
  (`weights=None`, nothing is downloaded) with `num_classes` from the data. When the data
  has other than 3 channels, the first convolution is replaced by one that takes them.
- `<module>:<callable>`: the user's code. The callable receives the dataset's `ModelSpec`
  (channels, image_size, num_classes) and returns an `nn.Module`. The module is imported
  from the working directory or `PYTHONPATH`.

Every model so built is checked with one forward pass on zeros: it must return logits of
shape (batch, num_classes). The run records the name and the architecture's fingerprint,
and refuses to reopen if the code now builds another architecture (`rundir.Run.new_model`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

import torch
from torch import nn

from unlearn_cli.errors import InvalidParameterError, UnknownNameError
from unlearn_cli.models.spec import ModelSpec

TORCHVISION = "torchvision:"
Builder = Callable[[ModelSpec], nn.Module]


def is_external(name: str) -> bool:
    return ":" in name


def external_builder(name: str) -> Builder:
    """The builder for `torchvision:<name>` or `<module>:<callable>` (checked, not called)."""
    if name.startswith(TORCHVISION):
        arch = name[len(TORCHVISION) :]
        check_torchvision_name(arch)
        return lambda spec: torchvision_model(arch, spec)
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise InvalidParameterError(
            f"Model '{name}' is neither a registered name nor '<module>:<callable>'.",
            hint="e.g. --model lenet, --model torchvision:resnet18 or --model mynets:build",
        )
    target = import_callable(module_name, attr, name)
    return lambda spec: call_builder(target, spec, name)


def torchvision_names() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


def check_torchvision_name(arch: str) -> None:
    import difflib

    names = torchvision_names()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=1, cutoff=0.5)
        suggestion = f" Did you mean 'torchvision:{close[0]}'?" if close else ""
        raise UnknownNameError(
            f"Unknown torchvision classification model '{arch}'.{suggestion}",
            hint="any name in torchvision.models.list_models(module=torchvision.models), "
            "e.g. resnet18, mobilenet_v3_small, efficientnet_b0",
        )


def torchvision_model(arch: str, spec: ModelSpec) -> nn.Module:
    from torchvision import models

    kwargs: dict = {"weights": None, "num_classes": spec.num_classes}
    if arch in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # one output tensor, like every other classifier
        kwargs["init_weights"] = True
    model = models.get_model(arch, **kwargs)
    if spec.channels != 3:
        adapt_input_channels(model, spec.channels, f"torchvision:{arch}")
    return model


def adapt_input_channels(model: nn.Module, channels: int, name: str) -> None:
    """Replace the first convolution by one with `channels` inputs (fresh weights)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    child_name,
                    nn.Conv2d(
                        channels,
                        child.out_channels,
                        child.kernel_size,  # type: ignore[arg-type]
                        child.stride,  # type: ignore[arg-type]
                        child.padding,  # type: ignore[arg-type]
                        child.dilation,  # type: ignore[arg-type]
                        1,
                        child.bias is not None,
                        child.padding_mode,
                    ),
                )
                return
    raise InvalidParameterError(
        f"{name} has no convolution to adapt to {channels}-channel images.",
        hint="use 3-channel images, or a model of your own (--model <module>:<callable>)",
    )


def import_callable(module_name: str, attr: str, name: str) -> Callable:
    cwd = os.getcwd()
    if cwd not in sys.path:  # like `python -m`: the user's own modules beside them
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidParameterError(
            f"Model '{name}': cannot import module '{module_name}' ({exc}).",
            hint="run from the folder that holds it, or add that folder to PYTHONPATH",
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise InvalidParameterError(
            f"Model '{name}': importing '{module_name}' failed ({type(exc).__name__}: {exc}).",
            hint=f"fix the module so that `import {module_name}` works",
        ) from None
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InvalidParameterError(
                f"Model '{name}': module '{module_name}' has no '{attr}'.",
                hint=f"define {attr}(spec) in {module_name}, returning an nn.Module",
            )
        target = getattr(target, part)
    if not callable(target):
        raise InvalidParameterError(
            f"Model '{name}': '{attr}' in '{module_name}' is not callable.",
            hint=f"define {attr}(spec) returning an nn.Module",
        )
    return target


def call_builder(target: Callable, spec: ModelSpec, name: str) -> nn.Module:
    try:
        model = target(spec)
    except Exception as exc:
        raise InvalidParameterError(
            f"Model '{name}' failed to build for {spec.channels}x{spec.image_size}x"
            f"{spec.image_size} images and {spec.num_classes} classes "
            f"({type(exc).__name__}: {exc}).",
            hint="the callable receives a ModelSpec with channels, image_size, num_classes",
        ) from None
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(
            f"Model '{name}' returned {type(model).__name__}, not a torch.nn.Module.",
            hint="return the model itself (an nn.Module) from the callable",
        )
    return model


def check_forward(model: nn.Module, spec: ModelSpec, name: str) -> None:
    """One forward pass on zeros: logits of shape (2, num_classes), or a clear refusal."""
    shape = (2, spec.channels, spec.image_size, spec.image_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape, device=device))
    except Exception as exc:
        raise InvalidParameterError(
            f"Model '{name}' cannot take {spec.channels}x{spec.image_size}x{spec.image_size} "
            f"images ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
            hint="choose an --image-size the model accepts (e.g. 64 or 224), or another model",
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, spec.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidParameterError(
            f"Model '{name}' returns {got} for a batch of 2, not logits of shape "
            f"(2, {spec.num_classes}).",
            hint="return one logit per class from forward(); no auxiliary outputs",
        )
