"""Per-example evidence: the statistics on known cases, verdicts on a memorized and a generalized
forget set, evidence in every receipt, `auto` climbing its ladder, the gates, and the shadow
models' command (reused, killed, rebuilt)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from scipy import stats

from unlearn_cli.data.digits import write_mislabeled
from unlearn_cli.evidence import binomial_interval, chance_band, judge, threshold
from unlearn_cli.methods import auto as auto_module
from unlearn_cli.ops.forget import ForgetConfig, forget_run
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.ops.verify import verify_run
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.schemas import load_schema
from unlearn_cli.shadows import ShadowEvidence, ensure_shadows, read_shadows
from unlearn_cli.train_config import TrainConfig

MISLABELED = 0.03  # of the digits' training labels made wrong (the demo's request)


# -- the statistics ------------------------------------------------------------------------
def test_clopper_pearson_matches_its_closed_forms_and_beta_quantiles():
    assert binomial_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert binomial_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    low, high = binomial_interval(7, 40)
    assert low == pytest.approx(stats.beta.ppf(0.025, 7, 34))
    assert high == pytest.approx(stats.beta.ppf(0.975, 8, 33))


@pytest.mark.parametrize("n", [10, 57, 200])
def test_the_interval_covers_every_share_at_least_95_percent_of_the_time(n):
    """Exact coverage over a grid of true shares, from the binomial pmf (no simulation)."""
    ks = np.arange(n + 1)
    bounds = np.array([binomial_interval(int(k), n) for k in ks])
    for p in np.linspace(0.001, 0.999, 97):
        covered = (bounds[:, 0] <= p) & (p <= bounds[:, 1])
        assert stats.binom.pmf(ks, n, p)[covered].sum() >= 0.95 - 1e-9


def test_the_chance_band_is_binomials_central_95_percent():
    low, high = chance_band(100, 0.01)
    assert (low, high) == (0, 3)  # P(X <= 2) = 0.92, P(X <= 3) = 0.98 for Binomial(100, 1%)
    assert stats.binom.cdf(high, 100, 0.01) >= 0.975 > stats.binom.cdf(high - 1, 100, 0.01)
    low, high = chance_band(10_000, 0.05)
    assert (low, high) == (
        stats.binom.ppf(0.025, 10_000, 0.05),
        stats.binom.ppf(0.975, 10_000, 0.05),
    )


def test_the_threshold_lets_at_most_alpha_of_held_out_samples_through():
    rng = np.random.default_rng(0)
    held = rng.normal(size=10_000)
    cut = threshold(held, 0.01)
    assert (held > cut).mean() <= 0.01 and (held >= cut).mean() > 0.01
    # never-seen samples from the same distribution are flagged at about alpha, within chance
    verdict = judge(rng.normal(size=2_000), held, 0.01)
    assert verdict.within_band and 0.003 < verdict.share < 0.02
    # samples scoring higher (members) are flagged beyond chance
    assert not judge(rng.normal(2, 1, 200), held, 0.01).within_band


# -- verdicts on real models ---------------------------------------------------------------
@pytest.fixture(scope="module")
def memorized(tmp_path_factory) -> tuple[Path, tuple[int, ...]]:
    """LeNet on the digits with 3% of the labels wrong, trained until it memorizes them
    (the demo's run), with 8 shadow models; and the mislabeled ids."""
    folder = tmp_path_factory.mktemp("memorized")
    ids = write_mislabeled(folder / "digits.npz", MISLABELED, 0)
    config = TrainConfig(dataset=f"npz:{folder / 'digits.npz'}", epochs=20, lr=0.05)
    train_run(config, RecordConfig(), folder / "run", shadows=8)
    return folder / "run", tuple(ids.tolist())


@pytest.fixture(scope="module")
def memorized_run(memorized) -> Path:
    return memorized[0]


@pytest.fixture(scope="module")
def MEMORIZED(memorized) -> tuple[int, ...]:  # noqa: N802 (a constant of the module's run)
    return memorized[1]


@pytest.fixture(scope="module")
def generalized_run(trained_run, tmp_path_factory) -> Path:
    """The shared digits run (it generalizes) with 4 shadow models."""
    run = tmp_path_factory.mktemp("generalized") / "run"
    shutil.copytree(trained_run, run)
    ensure_shadows(Run.open(run), Run.open(run).load_dataset(), 4)
    return run


def verdict_on(run_path: Path, ids, version: int = 0):
    run = Run.open(run_path)
    data = run.load_dataset()
    evidence = ShadowEvidence.from_shadows(read_shadows(run), data, 0.01)
    return evidence.verdict(run.load_model(version), np.asarray(ids))


def test_evidence_flags_a_memorized_forget_set(memorized_run, MEMORIZED):  # noqa: N803
    verdict = verdict_on(memorized_run, MEMORIZED)
    assert not verdict.within_band and verdict.share > 0.5


def test_evidence_does_not_flag_samples_the_model_generalizes(generalized_run):
    ids = np.random.default_rng(1).choice(Run.open(generalized_run).n_train, 200, replace=False)
    verdict = verdict_on(generalized_run, ids)
    assert verdict.within_band and verdict.share <= 0.05


# -- receipts, gates, auto -----------------------------------------------------------------
@pytest.fixture
def memorized_copy(memorized_run, tmp_path) -> Path:
    shutil.copytree(memorized_run, tmp_path / "memorized")
    return tmp_path / "memorized"


def forget_json(cli, *args) -> tuple[int, dict, str]:
    result = cli("forget", *args, "--json")
    doc = json.loads(result.out)
    jsonschema.validate(doc, load_schema("forget"))
    return result.code, doc, result.err


@pytest.fixture(scope="module")
def IDS(MEMORIZED) -> str:  # noqa: N802, N803
    return ",".join(map(str, MEMORIZED))


def test_every_receipt_carries_the_evidence_before_and_after(memorized_copy, cli, IDS):  # noqa: N803
    code, doc, _ = forget_json(cli, memorized_copy, "-m", "retrain", "--ids", IDS)
    evidence = doc["evidence"]
    assert code == 0 and evidence["verified"] is True and evidence["shadows"] == 8
    assert not evidence["before"]["within_band"] and evidence["before"]["share"] > 0.5
    assert evidence["after"]["within_band"] and evidence["forgotten"] is True
    low, high = evidence["after"]["interval"]
    assert low <= evidence["after"]["share"] <= high
    stored = Run.open(memorized_copy).receipt(doc["version"])  # kept with the version
    assert stored["evidence"]["after"] == evidence["after"]
    log = json.loads(cli("log", memorized_copy, "--json").out)
    assert [v["evidence"] for v in log["versions"]] == [None, "forgotten"]


def test_a_run_without_shadows_says_its_receipts_are_unverified(run_copy, cli):
    code, doc, _ = forget_json(cli, run_copy, "-m", "replay", "--ids", "3,4")
    assert code == 0 and doc["evidence"]["verified"] is False
    assert "unlearn shadows" in doc["evidence"]["why"]
    assert json.loads(cli("log", run_copy, "--json").out)["versions"][1]["evidence"] == "unverified"
    table = cli("forget", run_copy, "-m", "replay", "--ids", "5").out
    assert "forgetting unverified" in table and "unverified: the run has no shadow" in table


def test_max_residual_exits_3_when_the_result_stays_flagged(memorized_copy, cli, IDS):
    # one tiny step of optimize moves the model but leaves the memorized set flagged
    args = ["-m", "optimize", "--ids", IDS, "-p", "stop=budget", "-p", "epochs=1"]
    code, doc, err = forget_json(cli, memorized_copy, *args, "-p", "lr=1e-4", "--max-residual", "0")
    assert code == 3 and doc["passed"] is False and doc["noop"] is False
    assert doc["gates"][0]["gate"] == "max_residual" and not doc["evidence"]["forgotten"]
    assert "gate failed: --max-residual 0" in err and "still flags" in err
    assert Run.open(memorized_copy).versions() == [0, 1]  # kept, for `unlearn retire`
    assert "flagged" in cli("log", memorized_copy).out
    table = cli("forget", memorized_copy, *args, "-p", "lr=1e-4", "--from", "0").out
    assert "the evidence still flags the forget set" in table
    code, doc, _ = forget_json(cli, memorized_copy, "-m", "retrain", "--ids", IDS, "--from", "0",
                               "--max-residual", "0")  # fmt: skip
    assert code == 0 and doc["passed"] is True


def test_eval_puts_the_evidence_first_and_gates_on_it(memorized_copy, cli, IDS):
    result = cli("eval", memorized_copy, "--ids", IDS, "--json", "--max-residual", "0.05")
    doc = json.loads(result.out)
    jsonschema.validate(doc, load_schema("eval"))
    assert result.code == 3 and doc["evidence"]["models"]["version"]["share"] > 0.5
    table = cli("eval", memorized_copy, "--ids", IDS)
    assert table.out.index("per-example evidence") < table.out.index("forget acc")


def test_eval_without_shadows_says_what_averages_cannot_see(run_copy, cli):
    result = cli("eval", run_copy, "--ids", "1,2,3")
    assert result.code == 0 and "cannot see a memorized sample" in result.out
    assert "unlearn shadows" in result.out


def test_auto_escalates_when_the_first_method_leaves_a_residue(
    memorized_copy,
    monkeypatch,
    MEMORIZED,  # noqa: N803
):
    # the first rung (optimize on memorized samples) made too weak to remove them
    weak = {"epochs": 1, "stop": "budget", "lr": 1e-4}
    monkeypatch.setattr(auto_module, "MEMORIZED_OPTIMIZE", weak)
    doc = forget_run(memorized_copy, ForgetConfig("auto"), ForgetRequest(ids=MEMORIZED))
    attempts = doc["auto"]["attempts"]
    assert [a["method"] for a in attempts] == ["optimize", "retrain"]
    assert attempts[0]["accepted"] is False and attempts[0]["within_band"] is False
    assert attempts[1]["accepted"] is True and doc["method"] == "retrain"
    assert all(a["seconds"] > 0 for a in attempts) and doc["evidence"]["forgotten"]


def test_auto_keeps_a_first_method_that_the_evidence_clears(generalized_run, tmp_path):
    """Replay, the first rung here, removes ten samples the model generalizes; the evidence
    clears its result, so nothing else runs."""
    run = tmp_path / "run"
    shutil.copytree(generalized_run, run)
    config = ForgetConfig("auto", {"max_replay_share": 1.0})
    doc = forget_run(run, config, ForgetRequest(ids=tuple(range(0, 100, 10))))
    attempts = doc["auto"]["attempts"]
    assert [a["method"] for a in attempts] == ["replay"] and attempts[0]["accepted"] is True
    assert doc["method"] == "replay" and doc["evidence"]["after"]["within_band"]


def test_auto_escalates_past_replay_when_memorized_samples_stay_flagged(memorized_copy, MEMORIZED):  # noqa: N803
    """Replay re-runs only the steps that saw the samples; on mislabeled digits the later
    steps keep most of what they memorized (4 of 5 still flagged here), so retrain runs."""
    config = ForgetConfig("auto", {"max_replay_share": 1.0})
    doc = forget_run(memorized_copy, config, ForgetRequest(ids=MEMORIZED[:5]))
    attempts = doc["auto"]["attempts"]
    assert [a["method"] for a in attempts] == ["replay", "retrain"]
    assert attempts[0]["within_band"] is False and attempts[1]["accepted"] is True
    assert doc["evidence"]["forgotten"] is True


def test_optimize_on_memorized_samples_stops_on_the_evidence(memorized_copy, MEMORIZED):  # noqa: N803
    """Whether 40 epochs clear this small run depends on the CPU's arithmetic (2 of 43
    flagged on one machine, 5 on another, where `auto` then retrains); the rung always
    checks the evidence as it goes and ends well below where it started."""
    config = ForgetConfig("optimize", dict(auto_module.MEMORIZED_OPTIMIZE))
    doc = forget_run(memorized_copy, config, ForgetRequest(ids=MEMORIZED))
    stopping = doc["details"]["stopping"]
    assert stopping["on"] == "evidence" and stopping["checks"] >= 1
    assert doc["evidence"]["after"]["share"] < doc["evidence"]["before"]["share"] / 3


def test_auto_never_stops_at_a_noop(run_copy, monkeypatch):
    """A first rung that changes nothing is no answer: the next rung runs."""
    stuck = {"epochs": 1, "lr": 1e-12, "stop": "budget"}
    monkeypatch.setattr(auto_module, "PARTIAL_OPTIMIZE", stuck)
    params = {"max_class_replay_share": 0.0}  # a whole class goes to (the stuck) optimize
    doc = forget_run(run_copy, ForgetConfig("auto", params), ForgetRequest(classes=("5",)))
    attempts = doc["auto"]["attempts"]
    assert attempts[0]["unchanged"] and attempts[0]["accepted"] is False
    assert doc["method"] == "retrain" and doc["noop"] is False


# -- the shadows command ---------------------------------------------------------------------
def test_shadows_command_builds_once_and_reuses(run_copy, cli):
    first = cli("shadows", run_copy, "-k", "4", "--json")
    assert first.code == 0, first.err
    doc = json.loads(first.out)
    jsonschema.validate(doc, load_schema("shadows"))
    assert doc["trained_now"] == 4 and doc["cost_vs_training"] > 0
    again = json.loads(cli("shadows", run_copy, "-k", "4", "--json").out)
    assert again["trained_now"] == 0 and again["reused"] == 4
    assert "4 shadow models" in cli("verify", run_copy).out


@pytest.mark.parametrize("k", ["3", "0", "1026"])
def test_shadows_command_refuses_a_bad_count(run_copy, cli, k):
    result = cli("shadows", run_copy, "-k", k)
    assert result.code == 1 and "--shadows must be an even number" in result.err
    assert not (run_copy / "shadows").exists()


def test_train_with_shadows_refuses_a_bad_count_before_training(cli, tmp_path):
    result = cli("train", "--out", tmp_path / "r", "--epochs", "1", "--shadows", "5")
    assert result.code == 1 and not (tmp_path / "r").exists()


def test_shadows_survive_a_kill(trained_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "unlearn_cli",
        "--progress",
        "none",
        "shadows",
        str(run),
        "-k",
        "8",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = run / "shadows" / "shadows.json"
    deadline = time.monotonic() + 120
    while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = json.loads(manifest.read_text())["count"]
    assert kept in (2, 4, 6, 8)  # whole pairs only
    assert verify_run(run)["ok"]
    resumed = json.loads(cli("shadows", run, "-k", "8", "--json").out)
    assert resumed["reused"] >= kept and resumed["trained_now"] == 8 - resumed["reused"]
    # the same shadows as an unkilled build
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    cli("shadows", other, "-k", "8")
    assert np.array_equal(read_shadows(Run.open(run)).phi, read_shadows(Run.open(other)).phi)


def test_shadows_are_rebuilt_for_a_run_trained_again(run_copy, cli):
    assert cli("shadows", run_copy, "-k", "2").code == 0
    meta = json.loads((run_copy / "run.json").read_text())
    meta["config"]["lr"] = 0.07  # trained again with another config (as `train --force` would)
    (run_copy / "run.json").write_text(json.dumps(meta))
    assert "stale" in cli("verify", run_copy).out
    code, doc, _ = forget_json(cli, run_copy, "-m", "replay", "--ids", "3")
    assert doc["evidence"]["verified"] is False and "another config" in doc["evidence"]["why"]
    rebuilt = json.loads(cli("shadows", run_copy, "-k", "2", "--json").out)
    assert rebuilt["trained_now"] == 2 and rebuilt["reused"] == 0


def test_the_python_api_builds_shadows_and_gates_on_the_evidence(run_copy, memorized_copy, IDS):  # noqa: N803
    import unlearn_cli

    built = unlearn_cli.train_shadows(run_copy, 2)
    jsonschema.validate(built, load_schema("shadows"))
    doc = unlearn_cli.forget(run_copy, "replay", ids=[3, 4])
    assert doc["evidence"]["verified"] is True and doc["evidence"]["shadows"] == 2
    ids = [int(i) for i in IDS.split(",")]
    gated = unlearn_cli.forget(memorized_copy, "optimize", ids=ids, max_residual=0.0,
                               params={"stop": "budget", "epochs": 1, "lr": 1e-4})  # fmt: skip
    assert gated["passed"] is False and gated["gates"][0]["gate"] == "max_residual"
    judged = unlearn_cli.evaluate(memorized_copy, gated["version"], max_residual=0.0)
    jsonschema.validate(judged, load_schema("eval"))
    assert judged["passed"] is False and judged["evidence"]["forgotten"] is False
