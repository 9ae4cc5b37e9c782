"""Pure metrics of `unlearn eval`: per-sample features, membership-inference attacks,
divergences, gaps to a reference, and the CI gates. Plain data in and out, tested
on hand-built logits; `ops/evaluate.py` applies them to a run's models.

Membership inference, two attacks, each computed on the model being judged:
- `member_rate`: a logistic regression on per-sample features (loss, confidence,
  entropy, modified entropy; Song & Mittal 2021) learns to tell retained training
  samples (members) from test samples (non-members); applied to the forget set,
  the share it judges "member". Lower means the forget set looks less seen; a
  model that never saw it scores about what `retrain` scores.
- `loss_auc`: the ROC AUC of telling forget samples from test samples by loss
  alone. 0.5 means indistinguishable; above 0.5, the forget set still has the low
  loss of training data.

A third, per-example attack runs where the run has shadow models (`unlearn shadows`,
`eval --shadows K`): the likelihood-ratio attack of `evidence.py`, whose per-sample
scores also decide which forget samples are flagged as members (the evidence).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_cli.errors import InvalidParameterError

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
    mean, scale = standard_scaling(x)
    w, b = fit_logistic((x - mean) / scale, labels)
    return float((((targets - mean) / scale) @ w + b > 0).mean())


def standard_scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (a constant column scales by 1), as
    scikit-learn's StandardScaler."""
    x = np.asarray(x, np.float64)
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 10 * np.finfo(np.float64).eps, scale, 1.0)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, c: float = 1.0, iterations: int = 100
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression, scikit-learn's objective with C = `c` (the
    intercept unpenalised): minimise 0.5 |w|^2 + c * sum log(1 + exp(-s_i (x_i w + b))),
    s_i = +-1. Newton's method on the few features converges to the optimum itself;
    scikit-learn's L-BFGS stops near it. (Importing scikit-learn took 2.2 s of eval.)"""
    x = np.asarray(x, np.float64)
    xb = np.c_[x, np.ones(len(x))]
    penalty = np.r_[np.ones(x.shape[1]), 0.0]
    theta = np.zeros(xb.shape[1])
    for _ in range(iterations):
        p = 0.5 * (1 + np.tanh(0.5 * (xb @ theta)))  # the logistic function, overflow-free
        grad = penalty * theta + c * xb.T @ (p - y)
        hess = np.diag(penalty) + c * (xb.T * (p * (1 - p))) @ xb
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(theta)), grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of scores of `positive` above `negative` (ties count half): the Mann-Whitney
    statistic from average ranks, equal to scikit-learn's roc_auc_score."""
    scores = np.r_[positive, negative].astype(np.float64)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)  # 1-based, ties averaged
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_points(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every distinct threshold, from
    (0, 0): calling member every score at or above the threshold."""
    scores = np.r_[positive, negative].astype(np.float64)
    is_pos = np.r_[np.ones(len(positive), bool), np.zeros(len(negative), bool)]
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]  # tie groups' ends
    tp = np.cumsum(is_pos)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / len(negative)], np.r_[0.0, tp / len(positive)]


def loss_auc(forget_loss: np.ndarray, test_loss: np.ndarray) -> float:
    """AUC of telling forget (positive) from test samples by low loss; 0.5 = no signal."""
    if len(forget_loss) == 0 or len(test_loss) == 0:
        return float("nan")
    return roc_auc(-np.asarray(forget_loss), -np.asarray(test_loss))


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
    gaps = {k: abs(a[k] - b[k]) for k in METRICS if finite(a.get(k)) and finite(b.get(k))}
    gaps["average"] = float(np.mean(list(gaps.values()))) if gaps else float("nan")
    return gaps


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and np.isfinite(x)


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
    "max_lira_auc": (("version", "lira_auc"), "<="),
    "max_avg_gap": (("gap", "average"), "<="),
    "max_js": (("gap", "js_divergence"), "<="),
}


def check_gates(
    limits: dict[str, float | None], has_reference: bool, has_shadows: bool = False
) -> dict[str, float]:
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
        if name == "max_lira_auc" and not has_shadows:
            raise InvalidParameterError(
                "--max-lira-auc gates the likelihood-ratio attack, which needs shadow models.",
                hint="add --shadows K (e.g. 8; trained once, then kept in the run), or build "
                "them first with `unlearn shadows RUN -k 8`",
            )
    return asked


def apply_gates(result: dict, asked: dict[str, float]) -> list[dict]:
    out = []
    for name, limit in asked.items():
        (section, key), op = GATES[name]
        source = result["gap"] if section == "gap" else result["models"]["version"]
        value = source.get(key)
        ok = finite(value) and (value <= limit if op == "<=" else value >= limit)
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
