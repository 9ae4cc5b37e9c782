"""The `unlearn eval --plot` figure. matplotlib is an optional extra (`[plot]`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearn_cli.errors import UnlearnError

LABELS = {"original": "original (0000)", "version": "unlearned", "reference": "reference"}


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UnlearnError(
            "--plot needs matplotlib, which is not installed.",
            hint="pip install 'unlearn-cli[plot]' (or pip install matplotlib)",
        ) from None


def plot_eval(result: dict, losses: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Left: test accuracy per class for each model. Right: loss of forget vs test samples."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [k for k in ("original", "version", "reference") if k in result["models"]]
    names = result["class_names"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(models)
    x = np.arange(len(names))
    forgotten = set(result["forget_set"]["classes"]) if len(names) <= 20 else set()
    for i, key in enumerate(models):
        per_class = result["models"][key]["test_acc_per_class"]
        acc = [np.nan if a is None else 100 * a for a in per_class]
        left.bar(x + (i - (len(models) - 1) / 2) * width, acc, width, label=LABELS[key])
    left.set_xticks(x, [f"{n}*" if c in forgotten else n for c, n in enumerate(names)], rotation=45)
    left.set_ylabel("test accuracy (%)")
    left.set_ylim(0, 105)
    left.set_title("test accuracy per class (* = in the forget set)")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(models), frameon=False)

    forget_loss, test_loss = losses["version"]
    top = np.quantile(np.r_[forget_loss, test_loss], 0.99) if len(test_loss) else 1.0
    bins = np.linspace(0, max(top, 1e-3), 40)
    right.hist(np.clip(test_loss, 0, top), bins, alpha=0.5, density=True, label="test samples")
    right.hist(np.clip(forget_loss, 0, top), bins, alpha=0.5, density=True, label="forget set")
    if "reference" in losses:
        ref_forget = np.clip(losses["reference"][0], 0, top)
        right.hist(
            ref_forget, bins, histtype="step", density=True, lw=2, label="forget set, reference"
        )
    auc = result["models"]["version"]["loss_auc"]
    right.set_title(f"loss of the unlearned model (forget vs test AUC {auc:.2f}; 0.5 = unseen)")
    right.set_xlabel("cross-entropy loss")
    right.set_ylabel("density")
    right.legend()
    fig.suptitle(f"{result['run']}: version {result['version']:04d} ({result['cost']['method']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
