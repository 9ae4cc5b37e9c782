"""Shared fixtures: tiny dataset files written by the tests, a CLI runner, a trained run."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unlearn_cli.cli.app import main
from unlearn_cli.ops.train import RecordConfig, train_run
from unlearn_cli.train_config import TrainConfig

# The real datasets beside the checkout (../shared/data), wherever pytest is started from.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run `unlearn ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic, dims, then uint8 data."""
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist_root(tmp_path) -> Path:
    """A data root holding 40/20 random MNIST-format images in torchvision's layout."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path


@pytest.fixture
def tiny_medmnist_root(tmp_path) -> Path:
    """A data root with a small pneumoniamnist.npz in medmnist's own key layout."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "medmnist"
    folder.mkdir()
    arrays = {}
    for split, n in (("train", 30), ("val", 6), ("test", 12)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(folder / "pneumoniamnist.npz", **arrays)
    return tmp_path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One small digits/lenet run with a pruned store and the layer covariances pgu
    needs, shared read-only by many tests."""
    path = tmp_path_factory.mktemp("runs") / "digits-lenet"
    train_run(
        TrainConfig(epochs=3, batch_size=32, lr=0.05), RecordConfig(keep=0.1), path, covariance=True
    )
    return path


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the shared run, for tests that write to it."""
    dest = tmp_path / "run"
    shutil.copytree(trained_run, dest)
    return dest


def gzip_file(path: Path) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        dst.write(src.read())


def write_npz(path: Path, shape=(12, 12, 3), classes: int = 3) -> Path:
    """A small user npz dataset: 20 train / 6 test uint8 images."""
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (20, *shape), dtype=np.uint8),
        y_train=np.arange(20) % classes,
        x_test=rng.integers(0, 256, (6, *shape), dtype=np.uint8),
        y_test=np.arange(6) % classes,
    )
    return path


CLASSES = ("normal", "pneumonia")


def write_image(path: Path, label: int, seed: int, mode: str = "RGB", size: int = 8) -> None:
    rng = np.random.default_rng(seed)
    base = 60 + 120 * label
    arr = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr, "RGB")
    (img.convert("L") if mode == "L" else img).save(path)


def write_image_folder(root: Path) -> Path:
    """imagefolder layout: 2 classes, 12 train and 4 test images each, 8x8 RGB PNG."""
    for split, n in (("train", 12), ("test", 4)):
        for label, name in enumerate(CLASSES):
            for i in range(n):
                write_image(
                    root / split / name / f"p{i % 4:02d}_{i:02d}.png", label, i + 100 * label
                )
    return root


def write_manifest(folder: Path) -> Path:
    """A CSV manifest with subjects: 6 patients with 4 images each, in shuffled row order."""
    rows = ["path,label,split,subject"]
    order = np.random.default_rng(1).permutation(24)
    for n in order:
        patient, label = f"patient-{n // 4:03d}", CLASSES[n % 2]
        rel = f"img/{n:03d}.png"
        write_image(folder / rel, n % 2, int(n), mode="L")
        rows.append(f"{rel},{label},train,{patient}")
    for n in range(6):
        rel = f"test/{n:03d}.png"
        write_image(folder / rel, n % 2, 1000 + n, mode="L")
        rows.append(f"{rel},{CLASSES[n % 2]},test,")
    path = folder / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "xray")


@pytest.fixture
def manifest(tmp_path) -> Path:
    return write_manifest(tmp_path / "scans")


@pytest.fixture
def dataset_example(tmp_path, tiny_mnist_root, tiny_medmnist_root):
    """name -> (spec, data root) of a small example of each registered dataset."""
    return {
        "digits": ("digits", tmp_path),
        "mnist": ("mnist", tiny_mnist_root),
        "medmnist": ("medmnist:pneumoniamnist", tiny_medmnist_root),
        "npz": (f"npz:{write_npz(tmp_path / 'mine.npz')}", tmp_path),
        "imagefolder": (f"imagefolder:{write_image_folder(tmp_path / 'folder')}", tmp_path),
        "csv": (f"csv:{write_manifest(tmp_path / 'scans')}", tmp_path),
    }
