"""How well a version forgot: accuracy, membership inference, gap to a reference, cost, gates.

Everything here is plain data in and out; `cli/eval_cmd.py` renders it. The JSON
document `evaluate` returns is an interface (README, "unlearn eval"): keys are
added, never renamed, and `schema` changes when one is.

Membership inference, two attacks, each computed on the model being judged:
- `member_rate`: a logistic regression on per-sample features (loss, confidence,
  entropy, modified entropy; Song & Mittal 2021) learns to tell retained training
  samples (members) from test samples (non-members); applied to the forget set,
  the share it judges "member". Lower means the forget set looks less seen; a
  model that never saw it scores about what `retrain` scores.
- `loss_auc`: the ROC AUC of telling forget samples from test samples by loss
  alone. 0.5 means indistinguishable; above 0.5, the forget set still has the low
  loss of training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_cli.errors import InvalidParameterError, RequestError, RunError
from unlearn_cli.ledger import ledger_state
from unlearn_cli.pruning import mask_overlap, sparsity
from unlearn_cli.requests import ForgetRequest
from unlearn_cli.rundir import Run
from unlearn_cli.sparse import sparse_state
from unlearn_cli.training import predict_logits

SCHEMA = 1
MIA_SAMPLES = 5000  # members and non-members each, at most, to fit the attack
METRICS = ("forget_acc", "retain_acc", "test_acc", "member_rate")  # averaged into the gap


# -- per-sample features and metrics (pure functions, tested on hand-built logits) --------
def sample_features(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(N, 4): loss, confidence p_y, entropy, modified entropy (Song & Mittal 2021)."""
    logits = logits.double()
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    p_y = p.gather(1, y[:, None]).squeeze(1)
    loss = -logp.gather(1, y[:, None]).squeeze(1)
    entropy = -(p * logp).sum(1)
    log1m = torch.log1p(-p.clamp(max=1 - 1e-12))
    other = -(p * log1m).sum(1) + p_y * log1m.gather(1, y[:, None]).squeeze(1)
    mentr = -(1 - p_y) * logp.gather(1, y[:, None]).squeeze(1) + other
    return torch.stack([loss, p_y, entropy, mentr], 1).numpy()


def member_rate(
    members: np.ndarray, nonmembers: np.ndarray, targets: np.ndarray, seed: int
) -> float:
    """Share of `targets` a member/non-member classifier on the features calls member."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(members), len(nonmembers), MIA_SAMPLES)
    if n == 0 or len(targets) == 0:
        return float("nan")
    x = np.concatenate(
        [
            members[rng.choice(len(members), n, replace=False)],
            nonmembers[rng.choice(len(nonmembers), n, replace=False)],
        ]
    )
    labels = np.r_[np.ones(n), np.zeros(n)]
    attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    attack.fit(x, labels)
    return float(attack.predict(targets).mean())


def loss_auc(forget_loss: np.ndarray, test_loss: np.ndarray) -> float:
    """AUC of telling forget (positive) from test samples by low loss; 0.5 = no signal."""
    from sklearn.metrics import roc_auc_score

    if len(forget_loss) == 0 or len(test_loss) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(forget_loss)), np.zeros(len(test_loss))]
    return float(roc_auc_score(labels, -np.r_[forget_loss, test_loss]))


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """Mean Jensen–Shannon divergence (bits, 0..1) between two models' outputs per sample."""
    if len(p_logits) == 0:
        return float("nan")
    p, q = p_logits.double().softmax(1), q_logits.double().softmax(1)
    m = (p + q) / 2

    def kl(a, b):
        return (a * (torch.log2(a.clamp_min(1e-300)) - torch.log2(b.clamp_min(1e-300)))).sum(1)

    return float((0.5 * kl(p, m) + 0.5 * kl(q, m)).mean())


def class_accuracy(pred: torch.Tensor, y: torch.Tensor, classes: int) -> list[float | None]:
    out = []
    for c in range(classes):
        sel = y == c
        out.append(float((pred[sel] == c).float().mean()) if sel.any() else None)
    return out


def average_gap(a: dict, b: dict) -> dict:
    """|a - b| for each metric in METRICS, and their mean (skipping missing ones)."""
    gaps = {k: abs(a[k] - b[k]) for k in METRICS if _finite(a.get(k)) and _finite(b.get(k))}
    gaps["average"] = float(np.mean(list(gaps.values()))) if gaps else float("nan")
    return gaps


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and np.isfinite(x)


# -- models and references ---------------------------------------------------------------
@dataclass
class Split:
    forget: torch.Tensor
    retain: torch.Tensor
    mia_members: torch.Tensor  # a sample of retain, to fit the attack


@dataclass
class Scored:
    metrics: dict
    forget_logits: torch.Tensor
    forget_loss: np.ndarray
    test_loss: np.ndarray


def score_model(model, data, split: Split, seed: int) -> Scored:
    x, y = data.x_train, data.y_train
    forget_logits = predict_logits(model, x[split.forget])
    retain_pred = predict_logits(model, x[split.retain]).argmax(1)
    member_logits = predict_logits(model, x[split.mia_members])
    test_logits = predict_logits(model, data.x_test)
    f_feat = sample_features(forget_logits, y[split.forget])
    t_feat = sample_features(test_logits, data.y_test)
    m_feat = sample_features(member_logits, y[split.mia_members])

    def acc(pred, labels):
        return float((pred == labels).float().mean()) if len(labels) else float("nan")

    forget_acc = acc(forget_logits.argmax(1), y[split.forget])
    metrics = {
        "forget_acc": forget_acc,
        "ua": 1 - forget_acc,
        "retain_acc": acc(retain_pred, y[split.retain]),
        "test_acc": acc(test_logits.argmax(1), data.y_test),
        "member_rate": member_rate(m_feat, t_feat, f_feat, seed),
        "loss_auc": loss_auc(f_feat[:, 0], t_feat[:, 0]),
        "test_acc_per_class": class_accuracy(test_logits.argmax(1), data.y_test, data.num_classes),
    }
    return Scored(metrics, forget_logits, f_feat[:, 0], t_feat[:, 0])


def parse_reference(text: str, run: Run) -> tuple[Run, int]:
    """`N` (a version of this run), `PATH` (another run's latest version) or `PATH@N`."""
    if text.isdigit():
        return run, run.check_version(int(text))
    path_text, _, version_text = text.rpartition("@") if "@" in text else (text, "", "")
    if version_text and not version_text.isdigit():
        raise InvalidParameterError(
            f"--reference must be a version number, a run directory, or RUN@VERSION. "
            f"Got '{text}' instead.",
            hint="e.g. --reference 2, or --reference runs/retrained@1",
        )
    ref = Run.open(Path(path_text))
    version = ref.check_version(int(version_text)) if version_text else ref.latest_version()
    for key, field, what in (
        ("dataset", "fingerprint", "dataset"),
        ("model", "architecture", "architecture"),
    ):
        if run.meta[key][field] != ref.meta[key][field]:
            raise RunError(
                f"Reference {ref.path} has a different {what} from run {run.path} "
                f"({ref.meta[key]['name']} against {run.meta[key]['name']}).",
                hint="compare with a version trained on the same data and model, "
                "e.g. one made by `unlearn forget --method retrain`",
            )
    return ref, version


def forget_ids_for(run: Run, version: int, request: ForgetRequest | None, load_data) -> tuple:
    """(ids, where they came from): the request's, else everything the version forgot."""
    if request is not None and request.given:
        ids, _ = request.resolve(run.meta["dataset"]["n_train"], load_data)
        return ids, "request"
    ids = ledger_state(run.version_dir(version)).forgotten_ids
    if ids.size == 0:
        raise RequestError(
            f"Version {version} of {run.path} has forgotten nothing, so there is no forget set "
            "to evaluate.",
            hint="name the samples with --ids, --ids-file or --class, or pick a version "
            "made by `unlearn forget` with --version",
        )
    return ids, "ledger"


def training_seconds(run: Run, version: int) -> float | None:
    """What producing `version` from scratch took: training, or a retrain's receipt."""
    receipt = run.receipt(version)
    details = receipt.get("details") or {}
    return receipt.get("train_seconds") or details.get("train_seconds") or None


def weight_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    diff = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a)
    norm = sum(float(b[k].double().pow(2).sum()) for k in b)
    return {"l2": diff**0.5, "relative": (diff / norm) ** 0.5 if norm else float("nan")}


# -- gates -------------------------------------------------------------------------------
GATES = {  # option name -> (where the value is, comparison)
    "max_forget_acc": (("version", "forget_acc"), "<="),
    "min_retain_acc": (("version", "retain_acc"), ">="),
    "min_test_acc": (("version", "test_acc"), ">="),
    "max_member_rate": (("version", "member_rate"), "<="),
    "max_loss_auc": (("version", "loss_auc"), "<="),
    "max_avg_gap": (("gap", "average"), "<="),
    "max_js": (("gap", "js_divergence"), "<="),
}


def check_gates(limits: dict[str, float | None], has_reference: bool) -> dict[str, float]:
    """The gates asked for, validated before any work."""
    asked = {k: v for k, v in limits.items() if v is not None}
    for name, value in asked.items():
        if name not in GATES:
            raise InvalidParameterError(f"Unknown gate '{name}'.")
        if not 0 <= value <= 1:
            raise InvalidParameterError(
                f"--{name.replace('_', '-')} is a fraction between 0 and 1. Got {value} instead.",
                hint="e.g. 0.05 for 5%",
            )
        if GATES[name][0][0] == "gap" and not has_reference:
            raise InvalidParameterError(
                f"--{name.replace('_', '-')} compares with a reference, but none was given.",
                hint="add --reference VERSION (typically a `retrain` version)",
            )
    return asked


def apply_gates(result: dict, asked: dict[str, float]) -> list[dict]:
    out = []
    for name, limit in asked.items():
        (section, key), op = GATES[name]
        source = result["gap"] if section == "gap" else result["models"]["version"]
        value = source.get(key)
        ok = _finite(value) and (value <= limit if op == "<=" else value >= limit)
        out.append(
            {
                "gate": name,
                "metric": f"{section}.{key}",
                "op": op,
                "limit": limit,
                "value": value,
                "passed": bool(ok),
            }
        )
    return out


# -- the whole evaluation ----------------------------------------------------------------
def add_sparsity(result: dict, run: Run, version: int, ref: tuple[Run, int] | None) -> None:
    """Sparsity of pruned versions and, against a pruned reference, the masks' overlap
    (membership inference alone is unreliable for sparse models)."""
    mine = sparse_state(run, version)
    theirs = sparse_state(*ref) if ref is not None else None
    result["sparsity"] = {
        "version": sparsity(mine.masks) if mine else None,
        "reference": sparsity(theirs.masks) if theirs else None,
    }
    result["mask_overlap"] = mask_overlap(mine.masks, theirs.masks) if mine and theirs else None


def evaluate(
    run_path: Path,
    version: int | None = None,
    reference: str | None = None,
    request: ForgetRequest | None = None,
    gates: dict[str, float | None] | None = None,
    data_root: Path | None = None,
    download: bool = False,
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Score a version (and the original, and a reference) on its forget set.

    Returns the JSON document and, per model, the losses of forget and test samples
    (for the plot).
    """
    run = Run.open(run_path)
    version = run.latest_version() if version is None else run.check_version(version)
    ref = parse_reference(reference, run) if reference is not None else None
    asked = check_gates(gates or {}, ref is not None)
    data = run.load_dataset(data_root, download)
    ids, source = forget_ids_for(run, version, request, lambda: data)
    seed = int(run.meta["config"]["seed"])
    keep = np.ones(data.n_train, dtype=bool)
    keep[ids] = False
    retain = torch.from_numpy(np.flatnonzero(keep))
    gen = torch.Generator().manual_seed(seed)
    members = retain[torch.randperm(len(retain), generator=gen)[:MIA_SAMPLES]]
    split = Split(torch.from_numpy(ids), retain, members)

    models = {"version": run.load_model(version)}
    if version != 0:
        models["original"] = run.load_model(0)
    if ref is not None:
        models["reference"] = ref[0].load_model(ref[1])
    scored = {k: score_model(m, data, split, seed) for k, m in models.items()}

    receipt = run.receipt(version)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "run": str(run.path),
        "version": version,
        "dataset": run.meta["dataset"]["name"],
        "model": run.meta["model"]["name"],
        "class_names": run.meta["dataset"]["class_names"],
        "forget_set": {
            "source": source,
            "size": int(ids.size),
            "classes": sorted({int(c) for c in data.y_train[split.forget].tolist()}),
        },
        "models": {k: v.metrics for k, v in scored.items()},
        "reference": None,
        "gap": None,
        "cost": {
            "method": receipt.get("method", "train"),
            "unlearn_seconds": receipt.get("wall_seconds"),
            "bytes_read": receipt.get("bytes_read"),
            "reference_seconds": None,
            "speedup": None,
        },
    }
    result["warnings"] = []
    if ref is not None:
        ref_run, ref_version = ref
        result["reference"] = {"run": str(ref_run.path), "version": ref_version}
        ref_forgot = ledger_state(ref_run.version_dir(ref_version)).forgotten_ids
        if ref_version != 0 and not np.array_equal(ref_forgot, ids):
            result["warnings"].append(
                f"the reference (version {ref_version}) forgot {ref_forgot.size} samples, not "
                f"the {ids.size} of this forget set: the gaps compare different requests"
            )
        gap = average_gap(scored["version"].metrics, scored["reference"].metrics)
        gap["js_divergence"] = js_divergence(
            scored["version"].forget_logits, scored["reference"].forget_logits
        )
        gap["weight_distance"] = weight_distance(
            models["version"].state_dict(), models["reference"].state_dict()
        )
        result["gap"] = gap
        ref_seconds = training_seconds(ref_run, ref_version)
        cost = result["cost"]
        cost["reference_seconds"] = ref_seconds
        if ref_seconds and cost["unlearn_seconds"]:
            cost["speedup"] = ref_seconds / cost["unlearn_seconds"]
    add_sparsity(result, run, version, ref)
    result["gates"] = apply_gates(result, asked)
    result["passed"] = all(g["passed"] for g in result["gates"])
    losses = {k: (v.forget_loss, v.test_loss) for k, v in scored.items()}
    return result, losses
