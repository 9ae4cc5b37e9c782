"""Train a torchvision ResNet-18 on images listed in a manifest, in a plain PyTorch loop
recorded by `unlearn`, then forget one patient.

    python examples/custom_loop.py --manifest scans/manifest.csv --run runs/xray
    python examples/custom_loop.py --demo --run runs/xray   # writes a small synthetic manifest

The manifest is a CSV with the columns path,label,split,subject (see `unlearn list
datasets`). The loop is yours: your Dataset, DataLoader, optimizer and loss. `unlearn`
only needs one call per optimizer step naming the samples it saw (here by key: the
manifest path), and the same data named as a `--dataset` spec so that replay, retrain and
eval can reload it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import unlearn_cli as ul


class KeyedImages(Dataset):
    """(image, label, key) triples for a DataLoader, from the tensors `unlearn` loads.

    Replay and retrain re-run steps on the data as `unlearn` loads it (decoded, resized,
    standardised per channel), so the loop trains on exactly those tensors.
    """

    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.n_train

    def __getitem__(self, i: int):
        return self.data.x_train[i], self.data.y_train[i], self.data.keys[i]


def write_demo_manifest(folder: Path, patients: int = 8, per_patient: int = 4) -> Path:
    """A synthetic manifest: two classes, `patients` patients with a few images each."""
    rng = np.random.default_rng(0)
    rows = ["path,label,split,subject"]
    for p in range(patients):
        for i in range(per_patient):
            label = (p + i) % 2
            arr = np.clip(rng.normal(70 + 110 * label, 30, (32, 32)), 0, 255).astype(np.uint8)
            path = folder / "img" / f"p{p:03d}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr, "L").save(path)
            split = "test" if i == per_patient - 1 else "train"
            rows.append(f"img/{path.name},{'abnormal' if label else 'normal'},{split},P{p:03d}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--demo", action="store_true", help="write a synthetic manifest first")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--forget-subject", default="P003")
    args = parser.parse_args(argv)
    manifest = write_demo_manifest(args.run.parent / "demo-scans") if args.demo else args.manifest
    if manifest is None:
        parser.error("give --manifest FILE or --demo")

    data = ul.load_dataset(f"csv:{manifest}", image_size=args.image_size)
    loader = DataLoader(KeyedImages(data), batch_size=8, shuffle=True)
    torch.manual_seed(0)
    spec = ul.ModelSpec(data.channels, data.image_size, data.num_classes)
    model = ul.create_model("torchvision:resnet18", spec)  # input channels and classes adapted
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    with ul.record(
        args.run,
        model,
        builder="torchvision:resnet18",
        dataset=f"csv:{manifest}",
        image_size=args.image_size,
        lr=0.01,
        momentum=0.9,  # the loop's optimizer: replay and retrain re-run steps with it
        batch_size=8,
        epochs=args.epochs,
        force=True,
    ) as rec:
        for epoch in range(args.epochs):
            for x, y, keys in loader:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
                rec.step(keys=list(keys), epoch=epoch)

    receipt = ul.forget(args.run, "auto", subjects=[args.forget_subject])
    print(
        f"forgot subject {args.forget_subject}: {receipt['ids']['requested']} images, "
        f"{receipt['steps']['affected']} of {receipt['steps']['total']} steps, "
        f"method {receipt['method']} (auto: {receipt['auto']['why']})"
    )
    return receipt


if __name__ == "__main__":
    main()
