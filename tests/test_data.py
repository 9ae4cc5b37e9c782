"""Dataset loaders, through the same code paths as real data."""

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, write_npz

from unlearn_cli.data import DATASETS, load_dataset
from unlearn_cli.data.base import from_arrays
from unlearn_cli.errors import (
    DataError,
    DataNotFoundError,
    InvalidParameterError,
    UnknownNameError,
)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_keeps_the_contract(name, dataset_example):
    """Each registered dataset: NCHW float32 standardised images, int64 labels in range,
    square images, class names, and a fingerprint that does not change between loads."""
    assert name in dataset_example, f"add a small example of dataset '{name}' to conftest.py"
    spec, root = dataset_example[name]
    data = load_dataset(spec, root)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[2] == x.shape[3]
        assert y.dtype == torch.int64 and len(y) == len(x) > 0
        assert int(y.min()) >= 0 and int(y.max()) < data.num_classes
        assert torch.isfinite(x).all()
    assert data.x_train.shape[1] == data.channels in (1, 3)
    assert len(data.class_names) == data.num_classes >= 2
    assert load_dataset(spec, root).fingerprint == data.fingerprint
    assert set(data.describe()) >= {"name", "fingerprint", "n_train", "num_classes"}


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


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[:-5], "truncated or padded: 31371 bytes, its header promises 31376"),
        (lambda b: b"\x00\x00\x0d" + b[3:], "is not an IDX file of unsigned bytes"),
    ],
)
def test_a_damaged_idx_file_is_named(tiny_mnist_root, damage, message):
    path = tiny_mnist_root / "MNIST/raw/train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message) as exc:
        load_dataset("mnist", tiny_mnist_root)
    assert "train-images-idx3-ubyte" in str(exc.value) and "--download" in exc.value.hint


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
    data = load_dataset(f"npz:{write_npz(tmp_path / 'mine.npz')}")
    assert data.x_train.shape == (20, 3, 12, 12) and data.num_classes == 3


def test_npz_missing_key(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8)))
    with pytest.raises(InvalidParameterError, match="lacks the array"):
        load_dataset(f"npz:{path}")


def test_unknown_dataset():
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        load_dataset("digit")


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").exists(), reason="no shared data")
def test_real_mnist_when_present():
    data = load_dataset("mnist", SHARED_DATA)
    assert data.n_train == 60000 and len(data.x_test) == 10000
    from torchvision.datasets import MNIST  # the reader it replaced: the same dataset

    train, test = (MNIST(str(SHARED_DATA), train=t) for t in (True, False))
    before = from_arrays(
        "mnist",
        train.data.numpy()[:, None],
        train.targets.numpy(),
        test.data.numpy()[:, None],
        test.targets.numpy(),
        data.class_names,
        scale=255.0,
    )
    assert data.fingerprint == before.fingerprint  # runs trained before still match
    assert torch.equal(data.x_train, before.x_train) and torch.equal(data.y_test, before.y_test)
