"""The command line end to end: output, JSON, and exit codes 0 / 1 / 2."""

import json

from unlearn_cli.data import DATA_ROOT_ENV
from unlearn_cli.models import MODELS


def test_train_json_and_storage_report(cli, tmp_path):
    out = tmp_path / "run"
    r = cli(
        "train", "--model", "mlp", "--epochs", "1", "--batch-size", "128", "--out", out, "--json"
    )
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["steps"] == 12 and 0 <= summary["test_accuracy"] <= 1
    r = cli("storage-report", out, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    for key in ("total_bytes", "dense_fp32_bytes", "information_bound_bytes", "steps", "layers"):
        assert key in report
    assert report["steps"] == 12 and report["ratio_to_dense_fp32"] > 5
    assert {layer["name"] for layer in report["layers"]} >= {"1.weight", "5.bias"}
    assert report["covariance"] == []  # trained without --covariance


def test_storage_report_table(cli, trained_run):
    r = cli("storage-report", trained_run)
    assert r.code == 0 and "dense fp32" in r.out and "0.0.weight" in r.out
    assert "pgu covariances (run)" in r.out
    report = json.loads(cli("storage-report", trained_run, "--json").out)
    assert report["covariance"][0]["where"] == "run" and report["covariance"][0]["bytes"] > 0


def test_list(cli):
    r = cli("list", "models", "--json")
    assert r.code == 0
    assert [m["name"] for m in json.loads(r.out)] == MODELS.names()
    r = cli("list", "datasets")
    assert r.code == 0 and "medmnist" in r.out
    r = cli("list", "things")
    assert r.code == 1 and "must be one of models, datasets, methods" in r.err


def test_unknown_names_exit_1_with_suggestion(cli, tmp_path):
    r = cli("train", "--dataset", "mnsit", "--out", tmp_path / "x")
    assert r.code == 1 and "Did you mean 'mnist'?" in r.err and "Traceback" not in r.err
    r = cli("train", "--model", "resnet", "--out", tmp_path / "x")
    assert r.code == 1 and "Did you mean 'resnet9'?" in r.err
    assert not (tmp_path / "x").exists()


def test_invalid_values_exit_1(cli, tmp_path):
    r = cli("train", "--epochs", "-1", "--out", tmp_path / "x")
    assert r.code == 1
    assert (
        "The 'epochs' parameter of train must be an int in the range [1, inf). Got -1 instead."
        in r.err
    )
    r = cli("train", "--keep", "1.5", "--out", tmp_path / "x")
    assert r.code == 1 and "'keep'" in r.err and "(0, 1]" in r.err


def test_usage_errors_exit_2(cli, tmp_path):
    assert cli("train", "--epochs", "many", "--out", tmp_path / "x").code == 2
    assert cli("train", "--bogus").code == 2
    assert cli("train").code == 2  # --out is required
    assert cli("no-such-command").code == 2


def test_missing_data_exit_1(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "nowhere"))
    r = cli("train", "--dataset", "mnist", "--out", tmp_path / "x")
    assert r.code == 1 and "nowhere/MNIST/raw" in r.err and "--download" in r.err


def test_data_root_env_reaches_loader(cli, tmp_path, tiny_mnist_root, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tiny_mnist_root))
    r = cli(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--out",
        tmp_path / "m",
        "--json",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["steps"] == 2


def test_existing_out_exit_1(cli, trained_run):
    r = cli("train", "--out", trained_run)
    assert r.code == 1 and "already exists" in r.err and "--force" in r.err


def test_missing_run_exit_1(cli, tmp_path):
    r = cli("storage-report", tmp_path / "nope")
    assert r.code == 1 and "Run directory not found" in r.err


def test_debug_shows_traceback(cli, tmp_path):
    r = cli("--debug", "storage-report", tmp_path / "nope")
    assert r.code == 1 and "Traceback" in r.err


def test_version_and_help(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("unlearn ")
    r = cli("train", "--help")
    assert r.code == 0 and "--keep-schedule" in r.out


def test_root_options_are_taken_after_the_command_name(run_copy, cli, tmp_path):
    from unlearn_cli.cli.app import hoist_root_options

    assert hoist_root_options(["train", "--progress", "none", "-q", "--out", "r"]) == [
        "--progress", "none", "-q", "train", "--out", "r",
    ]  # fmt: skip
    assert hoist_root_options(["eval", "r", "--", "--quiet"]) == ["eval", "r", "--", "--quiet"]
    trained = cli("train", "--out", tmp_path / "r", "--epochs", "1", "--model", "mlp",
                  "--progress", "none", "--quiet", "--json")  # fmt: skip
    assert trained.code == 0 and trained.err == ""
    judged = cli("eval", run_copy, "--ids", "3", "--version", "0", "--progress=none", "--json")
    assert judged.code == 0 and json.loads(judged.out)["version"] == 0  # --version: the model's
    bad = cli("log", run_copy, "--progress", "loud")
    assert bad.code == 1 and "--progress must be one of" in bad.err
