"""Operating unlearn in pipelines: progress in logs, warnings under --quiet, stable JSON."""

from __future__ import annotations

import json

from unlearn_cli.cli.progress import LogProgress


def test_a_non_terminal_train_prints_progress_lines(cli, tmp_path):
    result = cli("train", "--out", tmp_path / "r", "--epochs", "2", "--model", "mlp")
    assert result.code == 0
    lines = [line for line in result.err.splitlines() if "train mlp on digits" in line]
    assert "started, 90 steps" in lines[0] and "done, 90 steps" in lines[-1]
    steps = [line for line in lines if ": step " in line]
    assert 5 <= len(steps) <= 11  # at most one per 10% of the work
    assert "epoch 1/2" in steps[0] and "epoch 2/2" in steps[-1]
    assert all("ETA" in line and "loss" in line for line in steps)


def test_quiet_and_none_silence_progress(cli, tmp_path):
    quiet = cli("--quiet", "train", "--out", tmp_path / "a", "--epochs", "1", "--model", "mlp")
    none = cli("--progress", "none", "train", "--out", tmp_path / "b", "--epochs", "1")
    assert quiet.code == none.code == 0 and quiet.err == "" and "step" not in none.err


def test_log_progress_cadence():
    now = [0.0]
    lines: list[str] = []
    log = LogProgress(share=0.1, seconds=30, clock=lambda: now[0], write=lines.append)
    log.start(1000, "job", epochs=2)
    for step in range(1000):
        now[0] += 0.001 if step < 500 else 1.0  # the second half is slow
        log.advance(1, {"epoch": step // 500, "loss": 0.5})
    log.stop()
    marks = [line for line in lines if ": step " in line]
    assert marks[0].split(": step ")[1].startswith("100/1000 (10%), epoch 1/2, loss 0.5000")
    assert len(marks) >= 10 + 500 // 30 - 1  # every 10%, and every 30 s in the slow half
    assert all(float(line.split(" elapsed")[0].split(", ")[-1][:-2]) >= 0 for line in marks)


def test_quiet_keeps_warnings_and_json_carries_them(run_copy, cli):
    args = ("forget", run_copy, "-m", "partial-amnesiac", "--class", "3", "--force", "--json")
    result = cli("--quiet", *args)
    assert result.code == 0 and "warning:" in result.err and "steps held a requested" in result.err
    document = json.loads(result.out)
    assert document["warnings"] and document["warning"] == document["warnings"][0]


def test_a_noop_has_the_same_keys_as_any_forget(run_copy, cli):
    first = json.loads(cli("forget", run_copy, "-m", "amnesiac", "--ids", "5,6", "--json").out)
    again = json.loads(cli("forget", run_copy, "-m", "amnesiac", "--ids", "6,5", "--json").out)
    assert first["noop"] is False and again["noop"] is True
    assert set(again) == set(first)
    assert set(again["steps"]) == set(first["steps"]) and set(again["ids"]) == set(first["ids"])
    assert again["steps"]["affected"] == 0 and again["ids"]["already_forgotten"] == [5, 6]
    assert again["version"] == 1 and again["details"] == {} and again["warnings"] == []


def test_retire_sets_a_version_aside_without_losing_an_erasure(run_copy, cli):
    assert cli("forget", run_copy, "-m", "amnesiac", "--ids", "5,6").code == 0  # version 1
    assert cli("forget", run_copy, "-m", "amnesiac", "--ids", "7").code == 0  # version 2
    result = cli("retire", run_copy, "1", "--why", "a bad method", "--json")
    retired = json.loads(result.out)
    assert result.code == 0 and retired["retired"] == [1, 2] and retired["default_from"] == 0
    assert retired["pending_ids"] == [5, 6, 7]
    assert (run_copy / "versions/0001").is_dir() and (run_copy / "versions/0002").is_dir()
    # The next request starts from the newest live version and removes what was owed.
    follow = json.loads(cli("forget", run_copy, "-m", "replay", "--ids", "9", "--json").out)
    assert follow["parent"] == 0 and follow["ids"]["pending_included"] == [5, 6, 7]
    assert follow["ids"]["newly_forgotten"] == [5, 6, 7, 9]
    refused = cli("forget", run_copy, "-m", "amnesiac", "--ids", "11", "--from", "2")
    assert refused.code == 1 and "Version 2 of" in refused.err and "is retired" in refused.err
    # Nothing is owed any more by the live version 3.
    again = json.loads(cli("forget", run_copy, "-m", "amnesiac", "--ids", "12", "--json").out)
    assert again["parent"] == 3 and again["ids"]["pending_included"] == []


def test_retire_refuses_what_it_cannot_do(run_copy, cli):
    assert cli("retire", run_copy, "0", "--why", "x").code == 1
    assert "cannot be retired" in cli("retire", run_copy, "0", "--why", "x").err
    assert "has no version 3" in cli("retire", run_copy, "3", "--why", "x").err
    assert cli("forget", run_copy, "-m", "amnesiac", "--ids", "5").code == 0
    assert "needs a reason" in cli("retire", run_copy, "1", "--why", " ").err
    assert cli("retire", run_copy, "1", "--why", "bad").code == 0
    assert "already retired" in cli("retire", run_copy, "1", "--why", "bad").err


def test_a_platform_without_flock_refuses_writes_clearly(run_copy, cli, monkeypatch):
    monkeypatch.setattr("unlearn_cli.fileio.fcntl", None)
    result = cli("forget", run_copy, "-m", "amnesiac", "--ids", "5")
    assert result.code == 1 and "This platform has no flock" in result.err
    assert cli("eval", run_copy, "--ids", "5", "--json").code == 0  # reading needs no lock


def test_the_terminal_bar_shows_epochs_rate_and_eta():
    from rich.console import Console

    from unlearn_cli.cli import progress as progress_module

    bar = progress_module.RichProgress()
    console = Console(record=True, width=160, force_terminal=True)
    original = progress_module.err
    progress_module.err = console
    try:
        bar.start(10, "train", epochs=2)
        bar.advance(3, {"epoch": 0, "loss": 0.5})
        assert bar._bar is not None
        text = bar._bar.tasks[0].fields["metrics"]
        bar.stop()
    finally:
        progress_module.err = original
    assert "epoch 1/2" in text and "loss 0.5000" in text and "steps/s" in text
