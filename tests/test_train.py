"""Training: determinism, the run directory, and refusing to clobber."""

import json

import pytest
import torch

from unlearn_cli.errors import DataNotFoundError, InvalidParameterError, RunError
from unlearn_cli.fileio import load_weights, state_hash
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.rundir import Run
from unlearn_cli.train_config import TrainConfig
from unlearn_cli.training import Hooks, TrainingDiverged

SMALL = TrainConfig(model="mlp", epochs=1, batch_size=128)


def test_same_seed_gives_bit_identical_weights(tmp_path):
    a = train_run(SMALL, RecordConfig(), tmp_path / "a")
    b = train_run(SMALL, RecordConfig(enabled=False), tmp_path / "b")  # recording changes nothing
    wa = load_weights(tmp_path / "a/versions/0000/model.safetensors")
    wb = load_weights(tmp_path / "b/versions/0000/model.safetensors")
    assert state_hash(wa) == state_hash(wb)
    assert a["final_loss"] == b["final_loss"]
    c = train_run(
        TrainConfig(model="mlp", epochs=1, batch_size=128, seed=1), RecordConfig(), tmp_path / "c"
    )
    assert state_hash(load_weights(tmp_path / "c/versions/0000/model.safetensors")) != state_hash(
        wa
    )
    assert c["steps"] == a["steps"]


def test_run_directory_layout(trained_run):
    meta = json.loads((trained_run / "run.json").read_text())
    assert meta["status"] == "complete" and meta["format"] == "unlearn-run"
    assert meta["config"]["seed"] == 0 and meta["dataset"]["name"] == "digits"
    assert meta["train"]["train_seconds"] > 0 and meta["dataset"]["fingerprint"]
    assert (trained_run / "init.safetensors").exists()
    receipt = json.loads((trained_run / "versions/0000/receipt.json").read_text())
    assert receipt["kind"] == "train" and receipt["version"] == 0
    run = Run.open(trained_run)
    model = run.load_model(0)
    assert sum(p.numel() for p in model.parameters()) == meta["model"]["num_params"]
    assert meta["train"]["test_accuracy"] > 0.5


def test_refuses_existing_out_without_force(trained_run, tmp_path):
    with pytest.raises(RunError, match="already exists"):
        train_run(SMALL, RecordConfig(), trained_run)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="not an unlearn run"):
        train_run(SMALL, RecordConfig(), other, force=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_force_replaces_a_run(run_copy):
    train_run(SMALL, RecordConfig(), run_copy, force=True)
    assert json.loads((run_copy / "run.json").read_text())["config"]["model"] == "mlp"


def test_failed_data_load_keeps_the_old_run(run_copy, tmp_path):
    before = (run_copy / "versions/0000/model.safetensors").read_bytes()
    bad = TrainConfig(dataset="mnist", model="mlp", epochs=1)
    with pytest.raises(DataNotFoundError, match="MNIST files not found"):
        train_run(bad, RecordConfig(), run_copy, force=True, data_root=tmp_path / "empty")
    assert (run_copy / "versions/0000/model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "change,message",
    [
        ({"epochs": 0}, r"The 'epochs' parameter of train must be an int in the range \[1, inf\)"),
        ({"lr": -0.1}, r"The 'lr' parameter of train must be a float in the range \(0, inf\)"),
        (
            {"optimizer": "rmsprop"},
            "The 'optimizer' parameter of train must be one of 'sgd', 'adam'",
        ),
        ({"device": "cuda:7"}, "CUDA is not available"),
    ],
)
def test_invalid_config(change, message, tmp_path):
    fields = {**SMALL.__dict__, **change}
    with pytest.raises(InvalidParameterError, match=message):
        train_run(TrainConfig(**fields), RecordConfig(), tmp_path / "x")
    assert not (tmp_path / "x").exists()  # validated before anything was written


def test_divergence_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged") as exc:
        train_run(
            TrainConfig(model="mlp", epochs=3, lr=1e6, momentum=0.0), RecordConfig(), tmp_path / "x"
        )
    assert "--lr" in exc.value.hint
    meta = json.loads((tmp_path / "x" / "run.json").read_text())
    assert meta["status"] == "training"  # the killed run is never mistaken for a finished one


def test_a_bad_keep_schedule_writes_nothing(tmp_path):
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps({"no.such.tensor": 0.5}))
    record = RecordConfig(schedule=str(schedule))
    with pytest.raises(InvalidParameterError, match="names tensor 'no.such.tensor'"):
        train_run(SMALL, record, tmp_path / "r1")
    assert not (tmp_path / "r1").exists()


def test_a_file_dataset_given_relative_is_found_from_any_folder(tmp_path, monkeypatch):
    """run.json keeps the resolved path: a cron job started elsewhere reads the same file."""
    from conftest import write_npz

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    write_npz(project / "mine.npz")
    monkeypatch.chdir(project)
    config = TrainConfig(dataset="npz:mine.npz", model="mlp", epochs=1, batch_size=8)
    train_run(config, RecordConfig(), tmp_path / "run")
    meta_path = tmp_path / "run" / "run.json"
    meta = json.loads(meta_path.read_text())
    assert meta["config"]["dataset"] == f"npz:{project / 'mine.npz'}"
    monkeypatch.chdir(elsewhere)
    assert Run.open(tmp_path / "run").load_dataset().n_train == 20
    # A run written before paths were resolved kept "npz:mine.npz": its recorded name is used.
    meta["config"]["dataset"] = "npz:mine.npz"
    meta_path.write_text(json.dumps(meta))
    assert Run.open(tmp_path / "run").load_dataset().n_train == 20


def test_the_loop_trains_convolutions_channels_last_and_gives_them_back_contiguous():
    import itertools

    import torch

    from unlearn_cli.models.base import ModelSpec, create_model
    from unlearn_cli.training import epoch_batches, fit

    torch.manual_seed(0)
    model = create_model("lenet", ModelSpec(1, 8, 10))
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    params = list(model.parameters())
    conv = model[0][0].weight
    layouts = []

    def on_step(_):
        layouts.append(conv.is_contiguous(memory_format=torch.channels_last))

    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = itertools.islice(epoch_batches(torch.arange(64), 16, 1, 0), 3)
    fit(model, optimizer, x, y, batches, Hooks(on_step=on_step))
    assert layouts == [True] * 3  # oneDNN's fast layout, every step
    # the same objects: the optimizer and the recorder keep theirs
    assert list(model.parameters()) == params
    assert all(p.is_contiguous() for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    # a loop that fails gives the model back contiguous too
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged):
        fit(model, optimizer, x, y, epoch_batches(torch.arange(64), 64, 1, 0))
    assert all(p.is_contiguous() for p in model.parameters())


class _ViewsItsActivations(torch.nn.Module):
    """Code of one's own that flattens with .view, which channels-last activations refuse."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(len(x), -1))


def test_a_model_whose_forward_needs_contiguous_activations_trains_as_it_is():
    import itertools

    from unlearn_cli.training import epoch_batches, fit

    torch.manual_seed(0)
    model = _ViewsItsActivations()
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    layouts = []
    result = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        x,
        y,
        itertools.islice(epoch_batches(torch.arange(32), 16, 1, 0), 2),
        Hooks(on_step=lambda _: layouts.append(model.conv.weight.is_contiguous())),
    )
    assert result.steps == 2 and layouts == [True, True]
