"""What a model is built from: the dataset's channels, image size and class count."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    channels: int
    image_size: int
    num_classes: int

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(int(d["channels"]), int(d["image_size"]), int(d["num_classes"]))

    def to_dict(self) -> dict:
        return asdict(self)
