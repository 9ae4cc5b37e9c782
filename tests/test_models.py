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
    from unlearn_cli.predict import predict_logits, predictor_copy

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


def test_prediction_batches_keep_the_largest_layer_output_within_the_budget():
    """ResNet-9's largest output (64 channels at 28x28) is 196 KiB per image: 83 images fill
    16 MiB. The batch is clamped to 8..1,024, a model without convolutions predicts 1,024
    at a time, and the logits are the same whatever the batch."""
    from unlearn_cli import predict

    torch.manual_seed(0)
    model = create_model("resnet9", ModelSpec(channels=1, image_size=28, num_classes=10)).eval()
    mlp = create_model("mlp", ModelSpec(channels=1, image_size=28, num_classes=10)).eval()
    x = torch.randn(200, 1, 28, 28)
    with torch.inference_mode():
        largest = predict.largest_output(model, x[:1])
        assert largest == 64 * 28 * 28 * 4
        assert predict.prediction_batch(model, x[:1]) == 16 * 2**20 // largest == 83
        assert predict.prediction_batch(model, x[:1], budget=largest * 50) == 50
        assert predict.prediction_batch(model, x[:1], budget=1) == 8
        assert predict.prediction_batch(model, x[:1], budget=2**40) == 1024
        assert predict.prediction_batch(mlp, x[:1], budget=1) == 1024
        assert predict.prediction_batch(model, x[:0]) == 1024
    assert torch.equal(predict.predict_logits(model, x), predict.predict_logits(model, x, 1024))
    assert all(p.is_contiguous() for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())  # the measuring hooks are gone


class Residual(torch.nn.Module):
    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


def test_only_relus_that_nothing_else_reads_run_in_place():
    from unlearn_cli.predict import _in_place_relus, predict_logits

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
