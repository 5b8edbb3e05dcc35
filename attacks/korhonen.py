"""Korhonen & You's attack on blind IQA models ("Adversarial Attacks against Blind Image Quality
Assessment Models", ACM QoEVMA 2022) as the MSU Metrics Robustness Benchmark runs it
(Antsiferova et al., AAAI 2024).

Adam optimises the image directly (no eps-ball; clamp to [0, 1] after each step). Before every step
the gradient is multiplied elementwise by a spatial-activity map computed once from the clean
image, so the perturbation concentrates in textured regions. The map, per image:

1. luma of the image in 0..255 scaled to studio range, ``(Y * 219 + 16) / 255`` with
   ``Y = 0.299 R + 0.587 G + 0.114 B``;
2. a 3x3 Sobel response with its one-pixel frame set to zero;
   ``sobel="code"`` (MSU code, default): the signed horizontal derivative only, so the map is
   negative where luma falls from left to right and the gradient is reversed there;
   ``sobel="text"`` (published text): the gradient magnitude of the horizontal and vertical filters;
3. division by the image's maximum response (if that maximum is 0, the MSU code adds 1 instead);
4. grey dilation with a 5x5 disk (the 5x5 square without its corners);
5. division by 255.

The map is shared by the three colour channels.

With ``linf`` set (``--eps``), the image is projected onto the L-inf ball of that radius around the
clean image after every step (before the clamp to [0, 1], which keeps it inside the ball); the
default ``None`` is the benchmark's attack, which has no ball.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from iqa_robustness.metrics.base import Metric

from .base import Attack, loss_grad, project_onto_ball, register_attack
from .budget import Budget

SobelVariant = Literal["code", "text"]
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LUMA = (0.299, 0.587, 0.114)


def spatial_activity_map(images: torch.Tensor, sobel: SobelVariant = "code") -> torch.Tensor:
    """The per-image spatial-activity map (N, 1, H, W) of Korhonen's attack (see module docstring)."""
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    luma = ((images * 255.0 * weights).sum(1, keepdim=True) * 219.0 + 16.0) / 255.0
    kx = _SOBEL_X.to(images).view(1, 1, 3, 3)
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    response = F.conv2d(padded, kx)
    if sobel == "text":
        response = torch.hypot(response, F.conv2d(padded, kx.transpose(-1, -2)))
    interior = torch.zeros_like(response)
    interior[..., 1:-1, 1:-1] = response[..., 1:-1, 1:-1]
    peak = interior.amax(dim=(-2, -1), keepdim=True)
    normalised = torch.where(peak == 0, interior + 1.0, interior / torch.where(peak == 0, 1.0, peak))
    # The 5x5 disk is the union of a 5x3 and a 3x5 rectangle; max-pooling ignores the outside.
    dilated = torch.max(
        F.max_pool2d(normalised, (5, 3), stride=1, padding=(2, 1)),
        F.max_pool2d(normalised, (3, 5), stride=1, padding=(1, 2)),
    )
    return dilated / 255.0


@register_attack
@dataclasses.dataclass(frozen=True)
class Korhonen(Attack):
    """Adam on the image with the gradient weighted by a spatial-activity map.

    Budget: L-inf ``linf`` when it is set, else none. With the default ``linf=None`` the code projects
    onto no ball: Adam's step per pixel is about ``lr`` but not bounded by it (the ratio of its
    bias-corrected moments can exceed 1 when the gradient changes sign), so the only limit is an
    analysis of Adam, roughly ``iters * lr`` (0.05 with the defaults), not a promise of the code.

    Attributes:
        lr: Adam learning rate.
        iters: number of steps.
        sobel: ``"code"`` (MSU code, signed horizontal Sobel) or ``"text"`` (Sobel magnitude).
        linf: radius of the L-inf ball around the clean image every step is projected onto;
            ``None`` (default, the benchmark) for no ball.
    """

    name = "korhonen"
    family = "perceptual"
    budget = Budget.linf("linf", optional=True)  # the projection after every step, when linf is set

    lr: float = 0.005
    iters: int = 10
    sobel: SobelVariant = "code"
    linf: float | None = None

    def __post_init__(self) -> None:
        if self.sobel not in ("code", "text"):
            raise ValueError(f"korhonen: sobel must be 'code' or 'text', got {self.sobel!r}")
        if self.linf is not None and not self.linf > 0:
            raise ValueError(f"korhonen: linf must be a positive radius (or unset), got {self.linf}")

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        activity = spatial_activity_map(images, self.sobel)
        x = images.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=self.lr)
        for _ in range(self.iters):
            x.grad = loss_grad(metric, x) * activity
            optimiser.step()
            with torch.no_grad():
                x.copy_(project_onto_ball(x, images, self.linf).clamp(0.0, 1.0))
        return x.detach()
