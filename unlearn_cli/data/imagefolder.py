"""`imagefolder:<dir>`: torchvision's ImageFolder layout, `<dir>/{train,test}/<class>/<image>`.

Classes are the folder names under `train/` (sorted, as ImageFolder sorts them); `test/`
may lack a class but may not add one. A sample's key is its path relative to `<dir>`,
e.g. `train/pneumonia/patient042_a.png`. Images are read by `data/images.py`.
"""

from __future__ import annotations

from pathlib import Path

from unlearn_cli.data import images
from unlearn_cli.data.base import DATASETS, Dataset
from unlearn_cli.errors import DataError, DataNotFoundError, InvalidParameterError

LAYOUT_HINT = "lay the images out as <dir>/train/<class>/<image> and <dir>/test/<class>/<image>"


@DATASETS.register("imagefolder", "your own image folders: imagefolder:<dir> with train/ and test/")
def load_imagefolder(
    arg: str | None, data_root: Path, download: bool, image_size: int | None
) -> Dataset:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not arg:
        raise InvalidParameterError(
            "Dataset 'imagefolder' needs a folder: use 'imagefolder:<dir>'.", hint=LAYOUT_HINT
        )
    root = Path(arg).expanduser().resolve()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataNotFoundError(f"Image folder not found: {root / split}.", hint=LAYOUT_HINT)
    try:
        classes, class_to_idx = find_classes(str(root / "train"))
    except FileNotFoundError:
        raise DataError(f"{root / 'train'} holds no class folders.", hint=LAYOUT_HINT) from None
    extra = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    unknown = [c for c in extra if c not in class_to_idx]
    if unknown:
        raise DataError(
            f"{root / 'test'} has class folder '{unknown[0]}' that train/ lacks.",
            hint="every test class needs training images; " + LAYOUT_HINT,
        )

    def samples(split: str) -> list[images.ImageSample]:
        found = make_dataset(
            str(root / split), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True
        )
        return [
            images.ImageSample(Path(p), Path(p).relative_to(root).as_posix(), label)
            for p, label in found
        ]

    return images.build(
        f"imagefolder:{root}",
        samples("train"),
        samples("test"),
        tuple(classes),
        image_size,
        subjects=False,
    )
