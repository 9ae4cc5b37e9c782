"""Every `--json` document validates against its published schema (unlearn_cli/schemas)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from unlearn_cli.schemas import DOCUMENTS, load_schema, schema_path


def check(name: str, result) -> dict:
    assert result.code == 0, result.err
    document = json.loads(result.out)
    jsonschema.validate(document, load_schema(name))
    return document


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_schema_is_valid_and_shipped(name):
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema_path(name).is_file() and schema["title"].startswith("unlearn ")


def test_every_command_output_validates(run_copy, cli, tmp_path):
    check(
        "train", cli("train", "--out", tmp_path / "r", "--epochs", "1", "--model", "mlp", "--json")
    )
    first = check("forget", cli("forget", run_copy, "-m", "replay", "--ids", "3,4", "--json"))
    noop = check("forget", cli("forget", run_copy, "-m", "replay", "--ids", "3", "--json"))
    assert first["noop"] is False and noop["noop"] is True
    check(
        "forget-dry-run", cli("forget", run_copy, "-m", "auto", "--ids", "9", "--dry-run", "--json")
    )
    check("eval", cli("eval", run_copy, "--json"))
    check("storage-report", cli("storage-report", run_copy, "--json"))
    check("covariance", cli("covariance", run_copy, "--force", "--json"))
    check("prune", cli("prune", run_copy, "--sparsity", "0.5", "--rounds", "1",
                       "--finetune-epochs", "0", "--from", "0", "--json"))  # fmt: skip
    check("verify", cli("verify", run_copy, "--json"))
    check("retire", cli("retire", run_copy, "2", "--why", "a test", "--json"))
    log = check("log", cli("log", run_copy, "--json"))
    assert [v["retired"] for v in log["versions"]] == [False, False, True]
    assert log["versions"][2]["retired_why"] == "a test" and log["default_from"] == 1
    check("export", cli("export", run_copy, "--out", tmp_path / "m.safetensors", "--json"))
    for kind in ("models", "datasets", "methods"):
        check("list", cli("list", kind, "--json"))


def test_a_document_missing_a_key_fails_its_schema(run_copy, cli):
    document = json.loads(cli("forget", run_copy, "-m", "amnesiac", "--ids", "3", "--json").out)
    jsonschema.validate(document, load_schema("forget"))
    del document["warnings"]
    with pytest.raises(jsonschema.ValidationError, match="'warnings' is a required property"):
        jsonschema.validate(document, load_schema("forget"))
