"""Shadow models for the likelihood-ratio attack (`unlearn eval --shadows K`), kept in the run.

The attack needs, for every sample it scores, models that trained on it and models that
did not. Its pool is the training split followed by the test split, so the forget set and
the held-out test samples are scored alike. Shadows come in pairs: pair j draws a random
half of the pool; shadow 2j trains on that half and shadow 2j+1 on the other half, so every
sample has exactly K/2 shadows with it and K/2 without. Each trains with the run's config
(model, optimizer, learning rate, batch size, epochs; the run's theta_0 when it was given
one with --init, else a fresh seeded init), through the one training loop.

Kept in `RUN/shadows/`: per shadow its weights (`NNNN.safetensors`) and its logit-scaled
confidence on every pool sample with its membership (`NNNN.npz`), and `shadows.json`,
rewritten after each complete pair, naming how many are complete and the key they were
trained for (the run's config, dataset and model fingerprints). A kill loses at most the
pair in training. `unlearn shadows`, `train --shadows` and `eval --shadows` reuse them,
train only the pairs they lack, and start over when the key differs (the run was trained
again otherwise); `forget` and `eval` read what is there (`read_shadows`) and judge
requests with it (`ShadowEvidence`, the per-example evidence of `evidence.py`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unlearn_cli.data import Dataset
from unlearn_cli.devices import resolve_device
from unlearn_cli.errors import InvalidParameterError, UnlearnError
from unlearn_cli.evidence import OutModels, Verdict, confidence_logit, judge
from unlearn_cli.fileio import atomic_write_bytes, atomic_write_json, load_weights, save_weights
from unlearn_cli.predict import predict_logits
from unlearn_cli.progress import NullProgress, Progress
from unlearn_cli.rundir import Run, cpu_state
from unlearn_cli.train_config import TrainConfig, class_weights, optimizer_for
from unlearn_cli.training import Hooks, train_epochs

FOLDER = "shadows"
FORMAT = 1
MAX_SHADOWS = 1024
BUILD_HINT = "build them once with `unlearn shadows RUN -k 8` (or `unlearn train --shadows 8`)"


@dataclass
class Shadows:
    phi: np.ndarray  # (K, n_train + n_test) logit-scaled confidence of each shadow
    member: np.ndarray  # (K, n_train + n_test) bool: the shadow trained on the sample
    trained: int  # shadows trained by this call (the rest were reused)
    seconds: float  # training time of all K, as recorded when each was trained


def check_count(k: int) -> None:
    if k < 2 or k % 2 or k > MAX_SHADOWS:
        raise InvalidParameterError(
            f"--shadows must be an even number from 2 to {MAX_SHADOWS} (shadows come in pairs "
            f"that split the samples in halves). Got {k} instead.",
            hint="e.g. --shadows 16; the attack's estimates settle from about 16",
        )


def shadow_key(run: Run) -> str:
    """What the shadows depend on: the training config, the data and the architecture."""
    meta = run.meta
    basis = {
        "format": FORMAT,
        "config": meta["config"],
        "dataset": meta["dataset"]["fingerprint"],
        "model": meta["model"]["fingerprint"],
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def pool_halves(seed: int, pair: int, n_pool: int) -> np.ndarray:
    """Pair `pair`'s split of the pool: True where the pair's first shadow trains."""
    rng = np.random.default_rng([seed, 0x5AD0, pair])
    member = np.zeros(n_pool, bool)
    member[rng.permutation(n_pool)[: n_pool // 2]] = True
    return member


def _load_complete(run: Run, k: int | None) -> tuple[list, list, list[float]]:
    """The complete shadows kept for the run's current key, up to `k` (all when None):
    (phi per shadow, membership per shadow, training seconds). Stops at the first damaged
    or missing file."""
    folder = run.path / FOLDER
    manifest = _read_manifest(folder) or {}
    have = int(manifest["count"]) if manifest.get("key") == shadow_key(run) else 0
    seconds = [float(s) for s in manifest.get("seconds", [])[:have]]
    phi, member = [], []
    for i in range(have if k is None else min(have, k)):
        loaded = _read_shadow(folder, i)
        if loaded is None:  # a damaged or missing file: train from it on
            break
        phi.append(loaded[0])
        member.append(loaded[1])
    return phi, member, seconds[: len(phi)]


def read_shadows(run: Run) -> Shadows | None:
    """The run's kept shadows, trained for its current config (None: none usable)."""
    phi, member, seconds = _load_complete(run, None)
    whole = len(phi) - len(phi) % 2  # pairs: every sample needs shadows without it
    if not whole:
        return None
    return Shadows(np.stack(phi[:whole]), np.stack(member[:whole]), 0, sum(seconds[:whole]))


def damaged_shadows(run: Run, count: int) -> list[int]:
    """Shadows among the first `count` whose confidences or weights do not read whole."""
    folder, bad = run.path / FOLDER, []
    for i in range(count):
        try:
            load_weights(folder / f"{i:04d}.safetensors")
            ok = _read_shadow(folder, i) is not None
        except UnlearnError:
            ok = False
        if not ok:
            bad.append(i)
    return bad


def shadows_status(run: Run) -> dict:
    """What `RUN/shadows/` holds: {"count", "stale", "usable"} (stale: trained for
    another config, dataset or architecture than the run's)."""
    manifest = _read_manifest(run.path / FOLDER)
    if manifest is None:
        return {"count": 0, "stale": False, "usable": 0}
    stale = manifest.get("key") != shadow_key(run)
    usable = 0 if stale else len(_load_complete(run, None)[0]) // 2 * 2
    return {"count": int(manifest["count"]), "stale": stale, "usable": usable}


def ensure_shadows(
    run: Run, data: Dataset, k: int, progress: Progress | None = None, what: str = "eval"
) -> Shadows:
    """K shadows of the run, reused from `RUN/shadows/` where they are there."""
    check_count(k)
    folder = run.path / FOLDER
    key = shadow_key(run)
    phi, member, seconds = _load_complete(run, k)
    todo = range(len(phi), k)
    progress = progress or NullProgress()
    if todo:
        progress.start(len(todo), f"{what}: training {len(todo)} shadow models")
        # the pool every shadow draws its half from: training split, then test split
        pool = (torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test]))
        weights = class_weights(TrainConfig(**run.meta["config"]), data.y_train, data.num_classes)
    try:
        for i in todo:
            start = time.perf_counter()
            p, m = _train_shadow(run, pool, i, folder, weights)
            phi.append(p)
            member.append(m)
            seconds = seconds[:i] + [round(time.perf_counter() - start, 3)]
            if i % 2 == 1:  # a whole pair is complete: say so
                atomic_write_json(
                    folder / "shadows.json",
                    {"format": FORMAT, "key": key, "count": i + 1, "seconds": seconds},
                )
            progress.advance(1, {})
    finally:
        if todo:
            progress.stop()
    return Shadows(np.stack(phi), np.stack(member), len(todo), float(sum(seconds[:k])))


def _train_shadow(
    run: Run,
    pool: tuple[torch.Tensor, torch.Tensor],
    i: int,
    folder,
    weights: torch.Tensor | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shadow `i` on its half of the pool (training split, then test split), with the
    run's loss (its class weights, as training had them)."""
    config = TrainConfig(**run.meta["config"])
    x, y = pool
    n_pool = len(y)
    half = pool_halves(config.seed, i // 2, n_pool)
    member = half if i % 2 == 0 else ~half
    device = resolve_device("auto" if config.device.startswith("cuda") else config.device)
    # seeded per shadow (init, dropout), leaving the caller's random state alone: the CPU
    # generator's, and on a GPU that device's (manual_seed seeds every device)
    gpus = []
    if device.type == "cuda":
        gpus = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(config.seed * 7919 + 1 + i)
        model = run.new_model()
        if config.init:  # theta_0 (version 0 is the trained model, which saw every sample)
            model.load_state_dict(run.load_state(None))
        model.to(device)
        train_epochs(
            model,
            optimizer_for(config, model),
            x,
            y,
            torch.from_numpy(np.flatnonzero(member)),
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed + 1 + i,
            hooks=Hooks(class_weights=weights),
            what=f"shadow {i}",
        )
    model.eval()
    phi = confidence_logit(predict_logits(model, x).cpu(), y).astype(np.float32)
    save_weights(folder / f"{i:04d}.safetensors", cpu_state(model), {"shadow": str(i)})
    buf = io.BytesIO()
    np.savez(buf, phi=phi, member=np.packbits(member), n=np.int64(n_pool))
    atomic_write_bytes(folder / f"{i:04d}.npz", buf.getvalue())
    return phi, member


@dataclass
class ShadowEvidence:
    """The run's shadows ready to judge models on its data (`evidence.py`): each forget
    sample's score against the shadows that never saw it, flagged at a false-positive
    rate `alpha` calibrated on the held-out (test) samples under the same model."""

    out: OutModels
    data: Dataset
    shadows: int
    alpha: float

    @classmethod
    def from_shadows(cls, shadows: Shadows, data: Dataset, alpha: float) -> ShadowEvidence:
        return cls(OutModels.fit(shadows.phi, shadows.member), data, len(shadows.phi), alpha)

    def verdict(
        self, model: nn.Module, forget_ids: np.ndarray, heldout: np.ndarray | None = None
    ) -> Verdict:
        """`model`'s evidence on `forget_ids`, calibrated on `heldout` test positions (all
        of the test split when None)."""
        data = self.data
        ids = torch.from_numpy(np.asarray(forget_ids, np.int64))
        if len(ids) == 0:
            return judge(np.empty(0), np.empty(0), self.alpha)
        test = torch.arange(len(data.y_test)) if heldout is None else torch.as_tensor(heldout)
        forget_logits = predict_logits(model, data.x_train[ids])
        return self.judge_logits(forget_logits, ids, predict_logits(model, data.x_test[test]), test)

    def judge_logits(
        self,
        forget_logits: torch.Tensor,
        forget_ids: torch.Tensor,
        heldout_logits: torch.Tensor,
        heldout: torch.Tensor,
    ) -> Verdict:
        """The verdict from a model's logits on forget samples and held-out test samples."""
        data = self.data
        phi_f = confidence_logit(forget_logits, data.y_train[forget_ids])
        phi_t = confidence_logit(heldout_logits, data.y_test[heldout])
        forget = self.out.scores(phi_f, forget_ids.numpy())
        held = self.out.scores(phi_t, data.n_train + heldout.numpy())
        return judge(forget, held, self.alpha)


def _read_manifest(folder) -> dict | None:
    try:
        manifest = json.loads((folder / "shadows.json").read_text())
        return manifest if isinstance(manifest, dict) and "count" in manifest else None
    except (OSError, ValueError):
        return None


def _read_shadow(folder, i: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(io.BytesIO((folder / f"{i:04d}.npz").read_bytes())) as f:
            n = int(f["n"])
            return f["phi"], np.unpackbits(f["member"], count=n).astype(bool)
    except (OSError, ValueError, KeyError):
        return None
