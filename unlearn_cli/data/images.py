"""Images read from files (PIL, through torchvision's folder conventions), shared by the
`imagefolder:` and `csv:` datasets.

Every image is decoded with PIL and resized to `--image-size` (bilinear). Without
`--image-size`, every image must already have one square size, which is then used. The
channel count is chosen from the files: 1 when every training image is single-band
(grayscale, including 16-bit), else 3 (RGB; a grayscale image is then repeated).
16-bit grayscale is scaled to 0..255 before standardisation.

A training sample's *key* is its path relative to the dataset root (or a manifest's id):
samples are ordered by key, so the ids do not depend on the order the filesystem or the
manifest lists them, and keys are part of the dataset fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearn_cli.data.base import Dataset, from_arrays
from unlearn_cli.errors import DataError, InvalidParameterError

SINGLE_BAND = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True)
class ImageSample:
    path: Path
    key: str
    label: int
    subject: str | None = None


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise InvalidParameterError(
            f"--image-size must be between 1 and {MAX_IMAGE_SIZE}. Got {image_size} instead.",
            hint="e.g. --image-size 64",
        )


def open_image(path: Path):  # -> PIL.Image.Image
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(
            f"Image not found: {path}.", hint="restore the file or remove it from the dataset"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"Image {path} does not decode ({type(exc).__name__}: {exc}).",
            hint="replace or remove the damaged file",
        ) from None
    return img


def native_size(samples: list[ImageSample], what: str) -> int:
    """The one square size every image has, or a refusal asking for --image-size."""
    from PIL import Image

    sizes: dict[tuple[int, int], Path] = {}
    for s in samples:
        try:
            with Image.open(s.path) as img:
                sizes.setdefault(img.size, s.path)
        except Exception:  # decoding errors are named when the image is read
            continue
        if len(sizes) > 1:
            break
    if len(sizes) == 1:
        (w, h), path = next(iter(sizes.items()))
        if w == h:
            return w
        raise InvalidParameterError(
            f"{what}: images are not square ({path} is {w}x{h}).",
            hint="pass --image-size N to resize every image to NxN",
        )
    shown = ", ".join(f"{p.name} is {w}x{h}" for (w, h), p in sizes.items())
    raise InvalidParameterError(
        f"{what}: images have different sizes ({shown}).",
        hint="pass --image-size N to resize every image to NxN",
    )


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """(channels, size, size) float32 in 0..255."""
    from PIL import Image

    img = open_image(path)
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
        img = Image.fromarray(arr.astype(np.float32), mode="F")
        if channels == 3:
            img = img.convert("L")
    else:
        img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    arr = np.repeat(arr[None], channels, axis=0) if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def channel_count(samples: list[ImageSample]) -> int:
    from PIL import Image

    for s in samples:
        try:
            with Image.open(s.path) as img:
                if img.mode not in SINGLE_BAND:
                    return 3
        except Exception:
            continue
    return 1


def build(
    name: str,
    train: list[ImageSample],
    test: list[ImageSample],
    class_names: tuple[str, ...],
    image_size: int | None,
    subjects: bool,
) -> Dataset:
    """Decode both splits (ordered by key) into a `Dataset` with keys (and subjects)."""
    check_image_size(image_size)
    for split, samples in (("train", train), ("test", test)):
        if not samples:
            raise DataError(
                f"Dataset '{name}' has no {split} images.",
                hint=f"the {split} split needs at least one image",
            )
    train = sorted(train, key=lambda s: s.key)
    test = sorted(test, key=lambda s: s.key)
    seen: set[str] = set()
    for s in train:
        if s.key in seen:
            raise DataError(
                f"Dataset '{name}': two training samples have the key '{s.key}'.",
                hint="keys (paths or manifest ids) must be unique",
            )
        seen.add(s.key)
    present = {s.label for s in train}
    empty = [c for i, c in enumerate(class_names) if i not in present]
    if empty:
        raise DataError(
            f"Dataset '{name}': class '{empty[0]}' has no training image.",
            hint="every class needs training images; remove the class or add images",
        )
    size = image_size or native_size(train + test, f"Dataset '{name}'")
    channels = channel_count(train)

    def arrays(samples: list[ImageSample]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([decode(s.path, size, channels) for s in samples])
        return x, np.array([s.label for s in samples], dtype=np.int64)

    x_train, y_train = arrays(train)
    x_test, y_test = arrays(test)
    return from_arrays(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        class_names,
        scale=255.0,
        keys=tuple(s.key for s in train),
        subjects=tuple(s.subject or "" for s in train) if subjects else None,
    )
