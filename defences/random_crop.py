"""A random ``side`` x ``side`` crop (each image its own position), optionally a random horizontal flip as well.

Random: attacks with gradients average ``--eot`` draws; scoring makes one seeded draw. An image
smaller than ``side`` is cropped to its shorter side.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from .base import Defence, register_defence


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

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = min(self.side, h, w)
        out = []
        for image in x:
            top = int(torch.randint(0, h - s + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - s + 1, (1,), generator=generator))
            crop = image[:, top : top + s, left : left + s]
            if self.flip and bool(torch.rand((), generator=generator) < 0.5):
                crop = torch.flip(crop, dims=(-1,))
            out.append(crop)
        return torch.stack(out)
