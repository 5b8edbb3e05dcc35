"""A random ``side`` x ``side`` crop (each image its own position), optionally a random horizontal flip as well.

As torchvision's ``RandomCrop`` of the source benchmark: the top row, then the left column, uniform over
the positions that fit. Random: attacks with gradients average ``--eot`` draws; scoring gives each image
its own draw (:mod:`iqa_robustness.defences.base`). An image smaller than ``side`` is cropped to its
shorter side (the source refuses it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from .base import Defence, Draw, register_defence


@register_defence
@dataclasses.dataclass(frozen=True)
class RandomCrop(Defence):
    """Side ``side`` (grid 32, 64, 128, 256, 288); ``flip=true``: and a horizontal flip with probability 1/2."""

    name = "random-crop"
    short = "crop"
    label_field = "side"
    random = True
    changes_size: ClassVar[bool] = True
    aliases = ("crop",)
    description = "random side x side crop (flip=true: and a random horizontal flip)"

    side: int = 128
    flip: bool = False

    def __post_init__(self) -> None:
        if self.side < 1:
            raise ValueError(f"random-crop: side must be a positive number of pixels, not {self.side}")

    def draw(self, image: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        h, w = image.shape[-2:]
        s = min(self.side, h, w)
        out = {
            "top": int(torch.randint(0, h - s + 1, size=(1,), generator=generator)),
            "left": int(torch.randint(0, w - s + 1, size=(1,), generator=generator)),
        }
        if self.flip:
            out["flip"] = int(torch.rand((), generator=generator) < 0.5)
        return out

    def apply(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:
        s = min(self.side, *image.shape[-2:])
        top, left = draw["top"], draw["left"]
        crop = image[..., top : top + s, left : left + s]
        return torch.flip(crop, dims=(-1,)) if draw.get("flip") else crop
