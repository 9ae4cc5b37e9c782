"""Dataset loaders, through the same code paths as real data."""

import numpy as np
import pytest

from unlearn_cli.data import load_dataset
from unlearn_cli.errors import DataNotFoundError, InvalidParameterError, UnknownNameError


def test_digits_is_real_and_stable():
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert (a.n_train, len(a.x_test), a.num_classes, a.channels, a.image_size) == (
        1437,
        360,
        10,
        1,
        8,
    )
    assert a.fingerprint == b.fingerprint
    assert abs(float(a.x_train.mean())) < 1e-4  # standardised with train statistics


def test_mnist_reads_idx_files(tiny_mnist_root):
    data = load_dataset("mnist", tiny_mnist_root)
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert data.y_train.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_mnist_missing_files_say_where(tmp_path):
    with pytest.raises(DataNotFoundError, match="MNIST/raw/train-images-idx3-ubyte") as exc:
        load_dataset("mnist", tmp_path)
    assert "--download" in exc.value.hint


def test_medmnist_reads_npz(tiny_medmnist_root):
    data = load_dataset("medmnist:pneumoniamnist", tiny_medmnist_root)
    assert data.x_train.shape == (30, 1, 28, 28) and data.class_names == ("normal", "pneumonia")
    assert len(data.x_test) == 12


def test_medmnist_missing_and_unknown(tmp_path):
    with pytest.raises(DataNotFoundError, match="medmnist/organamnist.npz"):
        load_dataset("medmnist:organamnist", tmp_path)
    with pytest.raises(InvalidParameterError, match="Did you mean 'medmnist:pneumoniamnist'"):
        load_dataset("medmnist:pneumonia", tmp_path)


def test_npz_user_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8),
        y_train=np.arange(20) % 3,
        x_test=rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )
    data = load_dataset(f"npz:{path}")
    assert data.x_train.shape == (20, 3, 12, 12) and data.num_classes == 3


def test_npz_missing_key(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8)))
    with pytest.raises(InvalidParameterError, match="lacks the array"):
        load_dataset(f"npz:{path}")


def test_unknown_dataset():
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        load_dataset("digit")


@pytest.mark.skipif(
    not __import__("pathlib").Path("../shared/data/MNIST/raw").exists(), reason="no shared data"
)
def test_real_mnist_when_present():
    data = load_dataset("mnist", "../shared/data")
    assert data.n_train == 60000 and len(data.x_test) == 10000
