"""Every bad input gets exit 1 (2 for usage), one line naming the problem and the fix, no
traceback, and leaves every run directory byte-identical.

One table of cases across every command. Placeholders: {run} a finished run with one
forget version; {corrupt} the same with a flipped byte in a store chunk; {badmodel} with
a flipped byte in version 1's model; {junk} with a torn run.json; {norec} trained with
--no-record; {in} a folder of bad input files; {out} a fresh path for --out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_npz
from test_reliability import damage_step, first_step_of, flip_byte, snapshot

from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.train_config import TrainConfig

TRAIN = ["train", "--epochs", "1", "--out", "{out}"]
FORGET = ["forget", "{run}", "-m", "amnesiac"]

CASES = [
    # -- train: parameters, datasets, schedules, the output folder -------------------------
    ("epochs 0", [*TRAIN, "--epochs", "0"], 1, "'epochs' parameter of train must be an int"),
    ("lr negative", [*TRAIN, "--lr", "-0.1"], 1, "'lr' parameter of train must be a float"),
    ("optimizer", [*TRAIN, "--optimizer", "rmsprop"], 1, "must be one of 'sgd', 'adam'"),
    ("unknown model", [*TRAIN, "--model", "lenett"], 1, "Did you mean 'lenet'?"),
    ("unknown dataset", [*TRAIN, "--dataset", "mnsit"], 1, "Did you mean 'mnist'?"),
    ("missing npz", [*TRAIN, "--dataset", "npz:{in}/missing.npz"], 1, "npz file not found"),
    ("zero-byte npz", [*TRAIN, "--dataset", "npz:{in}/empty.npz"], 1, "not a readable .npz"),
    ("nan pixels", [*TRAIN, "--dataset", "npz:{in}/nan.npz"], 1, "train image 2 holds NaN"),
    ("float labels", [*TRAIN, "--dataset", "npz:{in}/float.npz"], 1, "labels have dtype float"),
    ("label gap", [*TRAIN, "--dataset", "npz:{in}/gap.npz"], 1, "class 1 has no training"),
    ("label range", [*TRAIN, "--dataset", "npz:{in}/range.npz"], 1, "has label 5, outside 0..2"),
    ("empty test", [*TRAIN, "--dataset", "npz:{in}/notest.npz"], 1, "has no test images"),
    ("counts", [*TRAIN, "--dataset", "npz:{in}/counts.npz"], 1, "20 images but 19 labels"),
    ("npz keys", [*TRAIN, "--dataset", "npz:{in}/keys.npz"], 1, "lacks the array(s) y_test"),
    ("keep 0", [*TRAIN, "--keep", "0"], 1, "'keep' parameter of train must be a float"),
    ("keep-min", [*TRAIN, "--keep-min", "0.5"], 1, "'keep_min' parameter of the depth"),
    ("schedule tensor", [*TRAIN, "--keep-schedule", "{in}/tensor.json"], 1, "names tensor"),
    ("schedule json", [*TRAIN, "--keep-schedule", "{in}/broken.json"], 1, "is not valid JSON"),
    ("schedule name", [*TRAIN, "--keep-schedule", "deep"], 1, "must be one of uniform, depth"),
    ("delta dtype", [*TRAIN, "--delta-dtype", "int8"], 1, "'delta_dtype' parameter of train"),
    ("tolerance", [*TRAIN, "--keep-tolerance", "0.7"], 1, "'keep_tolerance' parameter of train"),
    ("device", [*TRAIN, "--device", "cuda:7"], 1, "CUDA is not available"),
    ("out is a file", ["train", "--out", "{in}/tensor.json"], 1, "exists and is a file"),
    ("out not a run", ["train", "--out", "{in}", "--force"], 1, "is not an unlearn run"),
    ("epochs text", [*TRAIN, "--epochs", "abc"], 2, "Invalid value for '--epochs'"),
    ("unknown option", [*TRAIN, "--epoch", "3"], 2, "No such option"),
    # -- forget: runs, requests, methods and their parameters, damaged files --------------
    ("no run", ["forget", "{in}/nope", "-m", "amnesiac", "--ids", "1"], 1, "not found"),
    ("not a run", ["forget", "{in}", "-m", "amnesiac", "--ids", "1"], 1, "run.json not found"),
    ("torn run.json", ["forget", "{junk}", "-m", "amnesiac", "--ids", "1"], 1, "not valid JSON"),
    ("method", ["forget", "{run}", "-m", "amnesic", "--ids", "1"], 1, "Did you mean 'amnesiac'"),
    ("no method", ["forget", "{run}", "--ids", "1"], 2, "Missing option '--method'"),
    ("ids text", [*FORGET, "--ids", "5,x"], 1, "'x' is not an integer sample id"),
    ("ids range", [*FORGET, "--ids", "99999"], 1, "Sample id 99999 is out of range"),
    ("ids negative", [*FORGET, "--ids=-1"], 1, "Sample id -1 is negative"),
    ("ids file", [*FORGET, "--ids-file", "{in}/missing.txt"], 1, "Ids file not found"),
    ("ids file line", [*FORGET, "--ids-file", "{in}/ids.txt"], 1, "line 2: 'four'"),
    ("ids file json", [*FORGET, "--ids-file", "{in}/ids.json"], 1, "JSON list of integers"),
    ("class", [*FORGET, "--class", "42"], 1, "has no class '42'"),
    ("nothing asked", FORGET, 1, "The request names no samples"),
    ("param form", [*FORGET, "--ids", "1", "-p", "finetune"], 1, "written key=value"),
    ("param name", [*FORGET, "--ids", "1", "-p", "epochs=1"], 1, "has no parameter 'epochs'"),
    ("param range", [*FORGET, "--ids", "1", "-p", "finetune_epochs=-1"], 1, "in the range [0"),
    ("param type", [*FORGET, "--ids", "1", "-p", "finetune_epochs=x"], 1, "must be an int"),
    (
        "retrain seed",
        ["forget", "{run}", "-m", "retrain", "--ids", "1", "-p", "seed=-3"],
        1,
        "in the range [0",
    ),
    ("from", [*FORGET, "--ids", "1", "--from", "99"], 1, "has no version 99"),
    ("unprune dense", [*FORGET, "--ids", "1", "--unprune"], 1, "applies to pruned versions"),
    (
        "layer_gamma",
        ["forget", "{run}", "-m", "pgu", "--ids", "1", "-p", "layer_gamma=x:0.9"],
        1,
        "names layer 'x'",
    ),
    ("no store", ["forget", "{norec}", "-m", "amnesiac", "--ids", "1"], 1, "no update store"),
    (
        "corrupt store",
        ["forget", "{corrupt}", "-m", "amnesiac", "--ids", "3"],
        1,
        "is corrupt: the chunk of updates/values",
    ),
    (
        "damaged model",
        ["forget", "{badmodel}", "-m", "amnesiac", "--ids", "9"],
        1,
        "does not match the hash recorded for it",
    ),
    ("forget device", [*FORGET, "--ids", "1", "--device", "cuda"], 1, "CUDA is not available"),
    # -- eval, prune, covariance, storage-report, verify, list ----------------------------
    ("eval reference", ["eval", "{run}", "--reference", "99"], 1, "has no version 99"),
    ("eval reference form", ["eval", "{run}", "--reference", "x@y"], 1, "--reference must be"),
    ("eval gate", ["eval", "{run}", "--max-forget-acc", "2"], 1, "a fraction between 0 and 1"),
    ("eval gap gate", ["eval", "{run}", "--max-avg-gap", "0.1"], 1, "compares with a reference"),
    ("eval nothing", ["eval", "{run}", "--version", "0"], 1, "has forgotten nothing"),
    ("eval out", ["eval", "{run}", "--out", "{in}/nodir/e.json"], 1, "does not exist"),
    ("eval damaged", ["eval", "{badmodel}"], 1, "does not match the hash recorded for it"),
    ("prune sparsity", ["prune", "{run}", "--sparsity", "1.5"], 1, "'sparsity' parameter"),
    ("prune from", ["prune", "{run}", "--sparsity", "0.5", "--from", "7"], 1, "no version 7"),
    ("covariance dtype", ["covariance", "{run}", "--dtype", "float16"], 1, "'dtype' parameter"),
    ("covariance batch", ["covariance", "{run}", "--batch-size", "0"], 1, "'batch_size'"),
    ("covariance exists", ["covariance", "{run}"], 1, "already has layer covariances"),
    ("report no store", ["storage-report", "{norec}"], 1, "has no update store"),
    ("report no run", ["storage-report", "{in}/nope"], 1, "Run directory not found"),
    ("verify damaged", ["verify", "{corrupt}"], 1, "verify found 1 problem(s)"),
    ("heavy request", [*FORGET, "--class", "3"], 1, "that amnesiac takes without damage"),
    ("share cap", [*FORGET, "--ids", "3", "--max-affected-share", "0"], 1, "over the 0%"),
    ("list", ["list", "things"], 1, "must be one of models, datasets, methods"),
]


@pytest.fixture(scope="module")
def places(trained_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-inputs")
    run = root / "run"
    shutil.copytree(trained_run, run)
    forget_run(run, ForgetConfig("amnesiac"), ForgetRequest(ids=(1, 2)))
    runs = {"run": run}
    for name in ("corrupt", "badmodel", "junk"):
        runs[name] = root / name
        shutil.copytree(run, runs[name])
    damage_step(runs["corrupt"], "values", first_step_of(runs["corrupt"], 3))
    flip_byte(runs["badmodel"] / "versions/0001/model.safetensors", where=0.9)
    text = (runs["junk"] / "run.json").read_text()
    (runs["junk"] / "run.json").write_text(text[: len(text) // 3])
    runs["norec"] = root / "norec"
    train_run(TrainConfig(epochs=1), RecordConfig(enabled=False), runs["norec"])
    runs["in"] = write_inputs(root / "inputs")
    return runs


def write_inputs(folder: Path) -> Path:
    folder.mkdir()
    (folder / "empty.npz").write_bytes(b"")
    arrays = dict(np.load(write_npz(folder / "good.npz")))
    nan = {**arrays, "x_train": arrays["x_train"].astype(np.float32)}
    nan["x_train"][2, 0, 0, 0] = np.nan
    variants = {
        "nan": nan,
        "float": {**arrays, "y_train": arrays["y_train"].astype(np.float32)},
        "gap": {**arrays, "y_train": np.where(arrays["y_train"] == 1, 0, arrays["y_train"])},
        "range": {**arrays, "y_test": np.r_[arrays["y_test"][:-1], 5]},
        "notest": {**arrays, "x_test": arrays["x_test"][:0], "y_test": arrays["y_test"][:0]},
        "counts": {**arrays, "y_train": arrays["y_train"][:19]},
        "keys": {k: v for k, v in arrays.items() if k != "y_test"},
    }
    for name, content in variants.items():
        np.savez(folder / f"{name}.npz", **content)
    (folder / "tensor.json").write_text(json.dumps({"nope": 0.5}))
    (folder / "broken.json").write_text("{nope")
    (folder / "ids.txt").write_text("4\nfour\n")
    (folder / "ids.json").write_text('["4"]')
    return folder


@pytest.mark.parametrize("args,code,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(cli, places, tmp_path, args, code, expected):
    out = tmp_path / "new-run"
    filled = [a.format(out=out, **places) for a in args]
    before = {name: snapshot(path) for name, path in places.items() if name != "in"}
    result = cli(*filled)
    assert result.code == code, result.err
    assert expected in result.err and "Traceback" not in result.err
    if code == 1:
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for name, files in before.items():
        assert snapshot(places[name]) == files, f"{name} changed"
    assert not out.exists()


def test_the_matrix_is_large():
    assert len(CASES) >= 40
