"""The pix2pix-style U-Net generator of the Generative-UAP and CNN-based (FACPA) attacks.

Shumitskaya et al., "Towards adversarial robustness verification of no-reference image- and
video-quality metrics", CVIU 2024 (and "Fast Adversarial CNN-based Perturbation Attack on
No-Reference Image Quality Metrics", ICLR Tiny Papers 2023); the architecture is the U-Net of
Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017.

Eight 4x4 stride-2 convolutions down and eight 4x4 stride-2 transposed convolutions up, 64 base
channels, InstanceNorm without affine parameters (none on the first and last down block or on the
last up block), dropout 0.5 on the first three up blocks, skip connections, tanh output. The
module names (``conv1`` ... ``conv8``, ``dconv1`` ... ``dconv8``) match the published generators,
so their state dicts load as they are.

Two details follow the published code rather than a textbook U-Net: the encoder's LeakyReLU was
applied in place, so each skip connection carries the *activated* encoder feature; and the
decoder uses ReLU. Input sides must be multiples of 256 (eight halvings, and InstanceNorm needs
more than one pixel at the seventh level).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: input sides must be multiples of this (2 ** 8)
GRANULE = 256


class UNetGenerator(nn.Module):
    """U-Net 8 down / 8 up; output in (-1, 1), same shape as the input.

    Args:
        in_channels: input channels (3: noise or an RGB image).
        out_channels: output channels (3: an RGB perturbation before scaling).
        base_channels: channels of the first block (64).
        dropout: dropout probability on the first three up blocks (0.5).
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64, dropout: float = 0.5
    ) -> None:
        super().__init__()
        b = base_channels
        widths = [b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b, 8 * b, 8 * b]
        self.dropout = dropout
        prev = in_channels
        for i, width in enumerate(widths, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(prev, width, 4, 2, 1))
            prev = width
        # dconv_k maps to the width of encoder level 8-k and is concatenated with its skip.
        for k in range(1, 9):
            c_in = widths[7] if k == 1 else 2 * widths[8 - k]
            c_out = widths[7 - k] if k < 8 else out_channels
            setattr(self, f"dconv{k}", nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % GRANULE or w % GRANULE:
            raise ValueError(
                f"the U-Net generator needs sides that are multiples of {GRANULE}, got {h}x{w}; "
                "crop or pad the input first"
            )
        skips: list[torch.Tensor] = []
        e = x
        for i in range(1, 9):
            e = getattr(self, f"conv{i}")(e)
            if 2 <= i <= 7:
                e = F.instance_norm(e)
            if i < 8:
                e = F.leaky_relu(e, 0.2)
                skips.append(e)  # the activated feature is what the published model concatenates
        d = e
        for k in range(1, 9):
            d = getattr(self, f"dconv{k}")(F.relu(d))
            if k == 8:
                break
            d = F.instance_norm(d)
            if k <= 3:
                d = F.dropout(d, self.dropout, self.training)
            d = torch.cat((d, skips[7 - k]), dim=1)
        return torch.tanh(d)
