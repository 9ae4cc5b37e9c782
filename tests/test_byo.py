"""Bring your own: torchvision and user models, --init, image folders and manifests,
requests by key and by data subject (with no clear identifier in receipts)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES
from safetensors.torch import load_file, save_file

from unlearn_cli.data import load_dataset
from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.ledger import ledger_state
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.rundir import Run


def forgotten(run: Path, version: int = 1) -> list[int]:
    return ledger_state(Run.open(run).version_dir(version)).forgotten_ids.tolist()


def train(cli, out, *args):
    r = cli("train", "--out", out, "--epochs", "1", "--batch-size", "8", "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_imagefolder_keys_are_relative_paths(image_folder):
    data = load_dataset(f"imagefolder:{image_folder}")
    assert data.n_train == 24 and data.channels == 3 and data.image_size == 8
    assert data.class_names == CLASSES
    assert data.keys is not None and data.keys == tuple(sorted(data.keys))
    assert data.keys[0] == "train/normal/p00_00.png"
    assert load_dataset(f"imagefolder:{image_folder}", image_size=12).image_size == 12


def test_manifest_order_does_not_change_ids_or_fingerprint(manifest):
    a = load_dataset(f"csv:{manifest}")
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    b = load_dataset(f"csv:{manifest}")
    assert a.keys == b.keys and a.fingerprint == b.fingerprint
    assert a.channels == 1 and a.subjects is not None
    assert a.subjects[a.keys.index("img/005.png")] == "patient-001"


def test_torchvision_resnet18_on_folder_forgets_by_key(cli, tmp_path, image_folder):
    run = tmp_path / "run"
    summary = train(cli, run, "--dataset", f"imagefolder:{image_folder}", "--model",
                    "torchvision:resnet18", "--keep", "0.01")  # fmt: skip
    assert summary["model"] == "torchvision:resnet18"
    key = "train/pneumonia/p01_05.png"
    r = cli("forget", run, "-m", "amnesiac", "--keys", key, "--force", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    ids = Run.open(run).load_dataset().keys.index(key)
    assert forgotten(run) == [ids]
    store = Run.open(run).store()
    assert doc["steps"]["affected"] == store.steps_touching(np.array([ids])).size > 0
    assert key not in (Run.open(run).version_dir(1) / "receipt.json").read_text()


def test_forget_by_subject_hits_their_images_and_keeps_no_clear_id(cli, tmp_path, manifest):
    run = tmp_path / "run"
    train(cli, run, "--dataset", f"csv:{manifest}", "--model", "lenet")
    data = Run.open(run).load_dataset()
    want = [i for i, s in enumerate(data.subjects) if s == "patient-002"]
    assert len(want) == 4
    r = cli("forget", run, "-m", "replay", "--subject", "patient-002", "--json")
    assert r.code == 0, r.err
    assert forgotten(run) == want
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".npz"):
            assert b"patient-002" not in path.read_bytes(), path
    receipt = json.loads((Run.open(run).version_dir(1) / "receipt.json").read_text())
    assert receipt["request"]["subject_hashes"] == [Run.open(run).sample_keys().hash("patient-002")]


def test_subjects_file_at_training_time(cli, tmp_path, image_folder):
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("key,subject\ntrain/normal/p00_00.png,ann\ntrain/normal/p00_04.png,ann\n")
    run = tmp_path / "run"
    train(cli, run, "--dataset", f"imagefolder:{image_folder}", "--subjects", subjects)
    r = cli("forget", run, "-m", "amnesiac", "--subject", "ann", "--force", "--json")
    assert r.code == 0, r.err
    assert len(forgotten(run)) == 2


def test_user_model_callable_and_changed_architecture(cli, tmp_path, monkeypatch):
    module = tmp_path / "mynets.py"
    module.write_text(
        textwrap.dedent("""
        from torch import nn
        WIDTH = 16
        def build(spec):
            return nn.Sequential(nn.Flatten(),
                nn.Linear(spec.channels * spec.image_size ** 2, WIDTH), nn.ReLU(),
                nn.Linear(WIDTH, spec.num_classes))
        def nothing(spec):
            return 3
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    train(cli, run, "--model", "mynets:build", "--epochs", "1")
    assert cli("forget", run, "-m", "amnesiac", "--ids", "1", "--force").code == 0
    r = cli("train", "--out", tmp_path / "bad", "--model", "mynets:nothing")
    assert r.code == 1 and "returned int, not a torch.nn.Module" in r.err
    assert not (tmp_path / "bad").exists()
    module.write_text(module.read_text().replace("WIDTH = 16", "WIDTH = 17"))
    sys.modules.pop("mynets", None)
    before = sorted(p.name for p in run.rglob("*"))
    r = cli("forget", run, "-m", "amnesiac", "--ids", "2", "--force")
    assert r.code == 1 and "now builds another architecture" in r.err
    assert sorted(p.name for p in run.rglob("*")) == before
    sys.modules.pop("mynets", None)


def test_init_weights_become_theta0(cli, tmp_path):
    first = tmp_path / "first"
    train(cli, first, "--epochs", "1")
    weights = tmp_path / "w.safetensors"
    state = Run.open(first).load_state(0)
    head = [k for k in state if k.startswith("5.")]  # the last Linear of lenet
    save_file({k: v for k, v in state.items() if k not in head}, str(weights))
    run = tmp_path / "run"
    train(cli, run, "--init", weights, "--epochs", "1", "--seed", "3", "--keep", "1",
          "--delta-dtype", "float32")  # fmt: skip
    theta0 = Run.open(run).load_state(None)
    for k, v in state.items():
        assert torch.equal(theta0[k], v) != (k in head), k
    # amnesiac subtraction of every step (a dense record) returns to those weights
    every = [arg for c in range(10) for arg in ("--class", str(c))]
    r = cli("forget", run, "-m", "amnesiac", *every, "--force")
    assert r.code == 0, r.err
    back = Run.open(run).load_state(1)
    assert max((back[k] - theta0[k]).abs().max().item() for k in theta0) < 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "imagefolder:{tmp}/none"], "Image folder not found"),
        (["--model", "torchvision:resnet19"], "Did you mean 'torchvision:resnet18'"),
        (["--model", "torchvision:vit_b_16"], "cannot take 1x8x8 images"),
        (["--model", "nosuchmodule:build"], "cannot import module 'nosuchmodule'"),
        (["--init", "{tmp}/none.safetensors"], "--init file not found"),
        (["--image-size", "16"], "--image-size applies to imagefolder: and csv:"),
        (["--subjects", "{tmp}/s.csv"], "--subjects needs a dataset whose samples have keys"),
    ],
)
def test_bad_byo_inputs_write_nothing(cli, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = cli("train", "--out", tmp_path / "run", "--epochs", "1", *args)
    assert r.code == 1 and message in r.err, r.err
    assert "Traceback" not in r.err and not (tmp_path / "run").exists()


def test_broken_image_and_unknown_key_or_subject(cli, tmp_path, image_folder, manifest):
    bad = image_folder / "train" / "normal" / "broken.png"
    bad.write_bytes(b"not a png")
    r = cli("train", "--out", tmp_path / "r1", "--dataset", f"imagefolder:{image_folder}")
    assert r.code == 1 and "broken.png does not decode" in r.err
    assert not (tmp_path / "r1").exists()
    run = tmp_path / "run"
    train(cli, run, "--dataset", f"csv:{manifest}")
    before = sorted(p.name for p in run.rglob("*"))
    for args, message in (
        (["--keys", "img/999.png"], "no training sample with key 'img/999.png'"),
        (["--subject", "patient-777"], "no training sample with subject 'patient-777'"),
    ):
        r = cli("forget", run, "-m", "amnesiac", "--force", *args)
        assert r.code == 1 and message in r.err, r.err
    assert sorted(p.name for p in run.rglob("*")) == before
    plain = tmp_path / "plain"
    train(cli, plain)
    r = cli("forget", plain, "-m", "amnesiac", "--keys", "a.png")
    assert r.code == 1 and "has no sample keys" in r.err


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_export_round_trips_into_a_fresh_model(cli, run_copy, tmp_path, fmt):
    assert cli("forget", run_copy, "-m", "replay", "--ids", "5").code == 0
    out = tmp_path / f"model.{fmt}"
    r = cli("export", run_copy, "--out", out, "--format", fmt, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    sidecar = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    run = Run.open(run_copy)
    assert doc["version"] == sidecar["version"] == run.resolve_version(None)
    assert sidecar["forgotten_samples"] >= 1 and sidecar["method"] == "replay"
    state = load_file(str(out)) if fmt == "safetensors" else torch.load(out, weights_only=True)
    fresh = create_model(sidecar["model"]["name"], ModelSpec.from_dict(sidecar["model"]["spec"]))
    fresh.load_state_dict(state)
    x = run.load_dataset().x_test[:16]
    expected = run.load_model(doc["version"]).eval()(x)
    assert torch.equal(fresh.eval()(x), expected)
    again = cli("export", run_copy, "--out", out)
    assert again.code == 1 and "already exists" in again.err


def test_export_refuses_retired_versions_and_missing_folders(cli, run_copy, tmp_path):
    assert cli("forget", run_copy, "-m", "amnesiac", "--ids", "2").code == 0
    assert cli("retire", run_copy, "1", "--why", "bad").code == 0
    r = cli("export", run_copy, "--version", "1", "--out", tmp_path / "m.safetensors")
    assert r.code == 1 and "is retired" in r.err and not (tmp_path / "m.safetensors").exists()
    r = cli("export", run_copy, "--out", tmp_path / "none" / "m.safetensors")
    assert r.code == 1 and "does not exist" in r.err
    r = cli("export", run_copy, "--out", tmp_path / "m.bin", "--format", "pickle")
    assert r.code == 1 and "--format must be safetensors or torch" in r.err


def test_custom_loop_recorder_makes_a_run_every_command_accepts(cli, tmp_path):
    """A plain PyTorch loop (Adam, gradient accumulation over two micro-batches) recorded
    with the Python API: theta_0 + the sum of the dense updates is theta_T, and forget,
    eval, storage-report, log and export work on the run."""
    import unlearn_cli as ul

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("lenet", ModelSpec(1, 8, 10))
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    run = tmp_path / "run"
    with ul.record(run, model, builder="lenet", dataset="digits", lr=0.01, batch_size=64,
                   epochs=1, optimizer="adam", keep=1.0, delta_dtype="float32") as rec:  # fmt: skip
        order = torch.randperm(data.n_train)
        for start in range(0, 640, 64):
            opt.zero_grad()
            for half in (order[start : start + 32], order[start + 32 : start + 64]):
                loss = torch.nn.functional.cross_entropy(
                    model(data.x_train[half]), data.y_train[half]
                )
                loss.backward()
                rec.add(ids=half)
            opt.step()
            rec.step(epoch=0)
    assert rec.steps == 10
    store = Run.open(run).store()
    total, _ = store.sum_updates(np.arange(10))
    flat0 = torch.cat([theta0[n].reshape(-1) for n, _ in model.named_parameters()])
    flat_t = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.allclose(flat0 + total, flat_t, atol=1e-5)
    assert torch.equal(ul.load_model(run).state_dict()["5.bias"], model.state_dict()["5.bias"])
    assert store.steps_touching(order[:1].numpy()).tolist() == [0]
    doc = ul.forget(run, "amnesiac", ids=[int(order[0])], force=True)
    assert doc["steps"]["affected"] == 1
    for args in (("eval", run, "--json"), ("storage-report", run, "--json"), ("log", run),
                 ("forget", run, "-m", "replay", "--ids", str(int(order[100])))):  # fmt: skip
        r = cli(*args)
        assert r.code == 0, (args, r.err)
    assert ul.evaluate(run)["version"] == 2


def test_recorder_without_data_allows_store_methods_only(cli, tmp_path):
    import unlearn_cli as ul

    torch.manual_seed(0)
    model = create_model("mlp", ModelSpec(1, 8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tmp_path / "run"
    with ul.record(run, model, builder="mlp", spec=ModelSpec(1, 8, 3), n_samples=40) as rec:
        for step in range(8):
            ids = torch.arange(step * 5, step * 5 + 5)
            opt.zero_grad()
            model(torch.randn(5, 1, 8, 8)).sum().backward()
            opt.step()
            rec.step(ids=ids)
    r = cli("forget", run, "-m", "replay", "--ids", "3")
    assert r.code == 1 and "custom training loop without a dataset" in r.err
    r = cli("forget", run, "-m", "auto", "--ids", "3", "--json")
    assert r.code == 0 and json.loads(r.out)["auto"]["chosen"] == "partial-amnesiac", r.err
    with pytest.raises(InvalidParameterError, match="outside 0..39"):
        ul.record(tmp_path / "r2", model, builder="mlp", spec=ModelSpec(1, 8, 3),
                  n_samples=40).step(ids=[40])  # fmt: skip
    with pytest.raises(InvalidParameterError, match="builds another architecture"):
        ul.record(tmp_path / "r3", model, builder="lenet", spec=ModelSpec(1, 8, 3), n_samples=4)
    assert not (tmp_path / "r3").exists()


def test_the_custom_loop_example_runs(tmp_path, monkeypatch):
    """examples/custom_loop.py: ResNet-18 in a plain loop on a manifest, then one patient."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    import custom_loop

    run = tmp_path / "runs" / "xray"
    receipt = custom_loop.main(["--demo", "--run", str(run), "--image-size", "16", "--epochs", "1"])
    assert receipt["ids"]["requested"] == 3 and receipt["noop"] is False
    assert "P003" not in (Run.open(run).version_dir(1) / "receipt.json").read_text()


def test_verify_checks_the_sample_keys(cli, tmp_path, image_folder):
    run = tmp_path / "run"
    train(cli, run, "--dataset", f"imagefolder:{image_folder}")
    assert cli("verify", run).code == 0
    (run / "samples.npz").unlink()
    r = cli("verify", run, "--json")
    assert r.code == 1 and "samples.npz" in r.out
