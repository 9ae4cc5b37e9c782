"""Per-example evidence of forgetting: does each forgotten sample still look like a member?

Accuracy averages cannot see a memorized sample (a mislabeled or poisoned one is "gotten
wrong" often enough already), so a request is judged sample by sample against models that
never saw each sample: the run's shadow models (`shadows.py`), of which every sample has
K/2 trained with it and K/2 without.

The test, per sample (Carlini et al. 2022's likelihood-ratio attack, in its one-sided,
"offline" form; Hayes et al. 2024 apply it to unlearning): the judged model's logit-scaled
confidence in the sample's label, `phi`, against the Gaussian of the confidences of the
shadows that did *not* train on it. The score is `(phi - mu_out) / sigma_out`: how much
more confident the model is than models that never saw the sample. One-sided on purpose:
a model less confident than those (a retrain on a poisoned sample, whose "out" shadows
learned the trigger from the other poisoned samples) shows no membership. The two-sided
ratio of the "in" and "out" Gaussians flagged 18% of a poisoned forget set under `retrain`
on MNIST/LeNet, this score 0% (docs/development.md). With fewer than
PER_EXAMPLE_VARIANCE shadows sigma_out is pooled over every sample of the shadows' pool.

A sample is *flagged* when its score is above the threshold that at most a share `alpha`
of held-out samples (the test split, which no version ever saw) exceed under the same
model: a false-positive rate calibrated on the model itself. Of a forget set of n samples
the model never saw, about Binomial(n, alpha) are flagged by chance; the *band* is that
count's central `CONFIDENCE` interval, and a request's flagged share is *within the band*
when it is no higher than chance allows. The flagged share itself comes with its
Clopper-Pearson interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ALPHA = 0.01  # the default false-positive rate: "TPR at 1% FPR", as papers report
CONFIDENCE = 0.95  # of the band and of the flagged share's interval
PER_EXAMPLE_VARIANCE = 64  # shadows from which each sample's own sigma_out is used


def confidence_logit(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)), computed stably as z_y - logsumexp(z_j, j != y)."""
    z = logits.double()
    z_y = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf"))
    return (z_y - torch.logsumexp(others, 1)).numpy()


@dataclass(frozen=True)
class OutModels:
    """The shadows' "out" Gaussian of every pool sample: mean and standard deviation."""

    mu: np.ndarray  # (n_pool,)
    sigma: np.ndarray  # (n_pool,) or a pooled scalar broadcast

    @classmethod
    def fit(cls, shadow_phi: np.ndarray, shadow_in: np.ndarray) -> OutModels:
        """From the shadows' confidences (k, n) and which trained on which sample (k, n)."""
        out = ~shadow_in
        n_out = out.sum(0)
        if (n_out == 0).any():
            from unlearn_cli.errors import InvalidParameterError

            raise InvalidParameterError("Every scored sample needs shadows without it.")
        mu = np.where(out, shadow_phi, 0).sum(0) / n_out
        squares = np.where(out, shadow_phi - mu, 0) ** 2
        if len(shadow_phi) >= PER_EXAMPLE_VARIANCE:
            var = squares.sum(0) / np.maximum(n_out - 1, 1)
        else:  # a few shadows give noise per sample: one variance for all (Carlini et al.)
            var = np.full(mu.shape, squares.sum() / max(int(n_out.sum()) - mu.size, 1))
        return cls(mu, np.sqrt(np.maximum(var, 1e-12)))

    def scores(self, phi: np.ndarray, pool_ids: np.ndarray) -> np.ndarray:
        """How far above never-seen models' confidence `phi` lies, in their deviations."""
        return (np.asarray(phi, np.float64) - self.mu[pool_ids]) / self.sigma[pool_ids]


def threshold(heldout: np.ndarray, alpha: float) -> float:
    """The score above which at most a share `alpha` of `heldout` lies."""
    ranked = np.sort(np.asarray(heldout, np.float64))[::-1]
    allowed = int(np.floor(alpha * len(ranked) + 1e-9))  # held-out samples that may exceed it
    return float(ranked[allowed]) if allowed < len(ranked) else float("-inf")


def binomial_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson interval of a share k/n (exact: it covers at least `confidence`)."""
    from scipy.special import betaincinv

    if n == 0:
        return (0.0, 1.0)
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, tail))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - tail))
    return (low, high)


def chance_band(n: int, alpha: float, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """The central `confidence` interval of Binomial(n, alpha): how many of n samples the
    model never saw are flagged by chance."""
    from scipy.special import bdtr

    if n == 0:
        return (0, 0)
    cdf = bdtr(np.arange(n + 1), n, alpha)
    tail = (1 - confidence) / 2
    low = int(np.searchsorted(cdf, tail))  # smallest k with P(X <= k) >= tail
    high = int(np.searchsorted(cdf, 1 - tail))  # smallest k with P(X <= k) >= 1 - tail
    return (low, min(high, n))


@dataclass(frozen=True)
class Verdict:
    """One model's per-example evidence on one forget set."""

    scores: np.ndarray  # (n_forget,) per forget sample
    threshold: float
    fpr: float  # the share of held-out samples above the threshold (at most alpha)
    flagged: np.ndarray  # (n_forget,) bool
    alpha: float

    @property
    def n(self) -> int:
        return int(self.scores.size)

    @property
    def count(self) -> int:
        return int(self.flagged.sum())

    @property
    def share(self) -> float:
        return self.count / self.n if self.n else 0.0

    @property
    def band(self) -> tuple[int, int]:
        return chance_band(self.n, self.alpha)

    @property
    def within_band(self) -> bool:
        """No more flagged than chance allows among samples the model never saw."""
        return self.count <= self.band[1]

    def summary(self, ids: np.ndarray | None = None) -> dict:
        low, high = binomial_interval(self.count, self.n)
        out = {
            "flagged": self.count,
            "of": self.n,
            "share": self.share,
            "interval": [low, high],
            "within_band": self.within_band,
            "threshold": self.threshold,
            "heldout_fpr": self.fpr,
        }
        if ids is not None:
            out["flagged_ids"] = np.asarray(ids)[self.flagged].astype(int).tolist()
        return out


def judge(forget_scores: np.ndarray, heldout_scores: np.ndarray, alpha: float) -> Verdict:
    """Flag forget samples scoring above what `alpha` of held-out samples exceed."""
    cut = threshold(heldout_scores, alpha)
    heldout = np.asarray(heldout_scores)
    fpr = float((heldout > cut).mean()) if heldout.size else float("nan")
    scores = np.asarray(forget_scores, np.float64)
    return Verdict(scores, cut, fpr, scores > cut, alpha)


def band_share(n: int, alpha: float) -> list[float]:
    """The band as shares of n: the flagged shares chance allows."""
    low, high = chance_band(n, alpha)
    return [low / n, high / n] if n else [0.0, 0.0]


def residual_passes(verdict: Verdict, max_residual: float) -> bool:
    """The gate `--max-residual R`: the flagged share may exceed R only within the band
    (what chance explains among never-seen samples is never held against a request)."""
    return verdict.within_band or verdict.share <= max_residual


def attack_summary(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """AUC and true-positive rates at 1% and 0.1% false positives of telling `positive`
    scores (the forget set) from `negative` ones (held-out samples); higher = member."""
    from unlearn_cli.metrics import roc_auc, roc_points

    if len(positive) == 0 or len(negative) == 0:
        nan = float("nan")
        return {"auc": nan, "tpr_at_1pct_fpr": nan, "tpr_at_0_1pct_fpr": nan}
    fpr, tpr = roc_points(positive, negative)

    def tpr_at(limit: float) -> float:
        return float(tpr[fpr <= limit].max())

    return {
        "auc": roc_auc(positive, negative),
        "tpr_at_1pct_fpr": tpr_at(0.01),
        "tpr_at_0_1pct_fpr": tpr_at(0.001),
    }
