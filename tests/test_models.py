"""Every registered model: output shape and a gradient on every parameter."""

import pytest
import torch

from unlearn_cli.errors import UnknownNameError
from unlearn_cli.models import MODELS, ModelSpec, create_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 28), (1, 8)])
def test_forward_and_gradients(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, ModelSpec(channels, size, 7))  # odd class count
    x = torch.randn(3, channels, size, size)
    out = model(x)
    assert out.shape == (3, 7)
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'lenet'"):
        MODELS.get("lenett")
