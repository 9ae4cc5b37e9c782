"""Every registered model: output shape and a gradient on every parameter."""

import copy

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


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_the_predictor_copy_gives_the_models_logits(name):
    """Channels-last weights round like the model (~1e-7); in-place ReLUs change nothing."""
    from unlearn_cli.training import predict_logits, predictor_copy

    torch.manual_seed(0)
    model = create_model(name, ModelSpec(channels=1, image_size=28, num_classes=10))
    x = torch.randn(40, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        layout_only = copy.deepcopy(model).to(memory_format=torch.channels_last)(x)
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert torch.allclose(predict_logits(model, x), expected, atol=1e-5)
    copied = predictor_copy(model)
    if copied is not None:
        with torch.no_grad():
            assert torch.equal(copied.eval()(x), layout_only)
    assert not any(m.inplace for m in relus)  # the model itself is untouched


class Residual(torch.nn.Module):
    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


def test_only_relus_that_nothing_else_reads_run_in_place():
    from unlearn_cli.training import _in_place_relus, predict_logits

    shared = torch.nn.ReLU()
    fresh = torch.nn.ReLU()
    hooked = torch.nn.ReLU()
    hooked.register_forward_hook(lambda module, args, out: None)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8),
        fresh,  # after a linear layer: may run in place
        Residual(torch.nn.Sequential(torch.nn.Identity(), torch.nn.ReLU())),  # reads x again
        torch.nn.Linear(8, 8),
        shared,  # held twice: not in place
        torch.nn.Linear(8, 8),
        hooked,
        torch.nn.Linear(8, 8),
    )
    model.extra = shared
    assert _in_place_relus(model) == [fresh]
    x = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.equal(predict_logits(model, x), model(x))
