"""The Python API mirrors the CLI: each function returns the document its command's `--json`
prints (validated against the same schema) and raises the command's errors."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

import unlearn_cli as ul
from unlearn_cli.errors import InvalidParameterError, RunError
from unlearn_cli.models import ModelSpec, create_model
from unlearn_cli.schemas import load_schema


def valid(name: str, document: dict) -> dict:
    jsonschema.validate(document, load_schema(name))
    return document


def test_every_command_is_a_function_returning_its_document(tmp_path):
    run = tmp_path / "run"
    trained = valid("train", ul.train(run, model="mlp", epochs=1))
    assert trained["dataset"] == "digits" and trained["steps"] > 0
    first = valid("forget", ul.forget(run, "replay", ids=[3, 4]))
    assert first["noop"] is False and first["evidence"]["verified"] is False
    valid("shadows", ul.train_shadows(run, 2))
    second = valid("forget", ul.forget(run, "retrain", ids=[3, 4], from_version=0))
    assert second["evidence"]["verified"] is True
    judged = valid("eval", ul.evaluate(run, first["version"], reference=str(second["version"]),
                                       gates={"max_avg_gap": 1.0}, max_residual=1.0))  # fmt: skip
    assert judged["passed"] is True and [g["gate"] for g in judged["gates"]] == [
        "max_avg_gap", "max_residual",
    ]  # fmt: skip
    named = valid("eval", ul.evaluate(run, 0, ids=[5, 6]))
    assert named["forget_set"] == {"source": "request", "size": 2, "classes": [5, 6]}
    assert ul.evaluate(run, gates={"max_forget_acc": 0.0})["passed"] is False
    valid("storage-report", ul.storage_report(run))
    assert valid("verify", ul.verify(run))["ok"] is True
    assert [v["version"] for v in valid("log", ul.log(run))["versions"]] == [0, 1, 2]
    valid("export", ul.export(run, tmp_path / "m.safetensors"))
    assert valid("retire", ul.retire(run, 2, "a test"))["retired"] == [2]


def test_the_functions_raise_the_commands_errors(tmp_path):
    with pytest.raises(RunError, match="Run directory not found") as caught:
        ul.log(tmp_path / "nothing")
    assert caught.value.hint and caught.value.exit_code == 1
    with pytest.raises(InvalidParameterError, match="even number"):
        ul.train(tmp_path / "r", model="mlp", epochs=1, shadows=3)
    assert not (tmp_path / "r").exists()


def test_record_writes_no_invented_settings(tmp_path):
    model = create_model("mlp", ModelSpec(1, 8, 3))
    with ul.record(tmp_path / "run", model, builder="mlp", spec=ModelSpec(1, 8, 3),
                   n_samples=10) as rec:  # fmt: skip
        rec.step(ids=[0, 1])
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    config = meta["config"]
    assert config["lr"] is None and config["epochs"] is None and config["batch_size"] is None
    assert config["momentum"] is None and config["dataset"] is None
    assert (
        "retrain" in meta["unavailable"]["methods"] and "replay" in meta["unavailable"]["methods"]
    )
    from unlearn_cli.ops.forget_plan import plan_request  # a dry run plans the store's methods
    from unlearn_cli.ops.forget_request import ForgetConfig
    from unlearn_cli.requests import ForgetRequest

    planned = plan_request(tmp_path / "run", ForgetConfig("auto"), ForgetRequest(ids=(0,)))
    by = {m["method"]: m for m in planned["methods"]}
    assert by["retrain"]["applies"] is False and by["partial-amnesiac"]["applies"] is True
    assert planned["auto"]["chosen"] == "partial-amnesiac"


def test_record_with_data_and_sgd_needs_the_momentum(tmp_path):
    model = create_model("mlp", ModelSpec(1, 8, 10))
    common = {"builder": "mlp", "dataset": "digits", "lr": 0.01, "batch_size": 32, "epochs": 1}
    with pytest.raises(InvalidParameterError, match="momentum"):
        ul.record(tmp_path / "run", model, **common)
    assert not (tmp_path / "run").exists()
    with ul.record(tmp_path / "run", model, momentum=0.0, **common) as rec:
        rec.step(ids=torch.arange(32))
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["momentum"] == 0.0 and "unavailable" not in meta
