"""NES gradient estimation (Ilyas, Engstrom, Athalye and Lin, "Black-box adversarial attacks with
limited queries and information", ICML 2018), raising a quality metric's score.

As the follow-up benchmark's code runs it (adversarial-defenses-for-iqa, ``metrics/methods/grad-est/run.py``;
docs/methodology.md, "Black-box attacks"): each iteration draws ``samples`` Gaussian directions ``u`` of
3 x ``tile`` x ``tile``, tiles them over the image and estimates the gradient of q by antithetic
finite differences, ``g = sum_k [q(x + s u_k) - q(x - s u_k)] u_k / (2 * samples * s)`` (``2 * samples``
queries, the probes clamped to [0, 1]); then it always takes the step
``x <- clip(x + eta * tile(g) / ||g||)``, projected onto the L-inf ball of ``eps`` around the clean image:
no query scores the iterate, and no step is refused. ``iters`` iterations of 40 queries make the
source's 10 000; a smaller budget runs ``queries // (2 * samples)`` iterations (one iteration with
fewer directions when the budget is below ``2 * samples``). The query curve is the mean of each
iteration's probe scores, q near the iterate (:mod:`attacks.queries`). What still differs from the
source's code: docs/differences.md.

ART and foolbox implement NES-style estimation inside classifier attacks (margin or cross-entropy
losses) only; none takes a regression objective, so the estimator is written here.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import project_onto_ball, register_attack
from .budget import Budget
from .presets import Presets
from .queries import BlackBoxAttack, Oracle, tile_to


@register_attack
@dataclasses.dataclass(frozen=True)
class NES(BlackBoxAttack):
    """NES black-box gradient ascent on q.

    Attributes:
        queries: query budget per image (``2 * samples`` per iteration).
        seed: seeds each image's directions.
        eps: L-inf bound around the clean image.
        sigma: finite-difference step ``s``.
        eta: step size on the normalised estimate.
        samples: directions per iteration (each takes two queries).
        iters: iterations at most (250 x 40 queries: the source's 10 000).
        tile: side of the directions, tiled over the image.
    """

    name = "nes"
    budget = Budget.linf("eps")  # every step is projected onto the eps ball around the clean image
    presets = Presets("grad-est", "eps", ((0, 2), (1, 4), (2, 8), (3, 16)))  # --eps b: eps = b

    eps: float = 0.1
    sigma: float = 0.001
    eta: float = 0.1
    samples: int = 20
    iters: int = 250
    tile: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.queries < 2:
            raise ValueError(f"{self.name}: one antithetic pair takes 2 queries; give queries >= 2")

    def schedule(self) -> tuple[int, int]:
        """``(iterations, directions per iteration)`` that fit the query budget."""
        if self.queries < 2 * self.samples:
            return 1, self.queries // 2
        return min(self.iters, self.queries // (2 * self.samples)), self.samples

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        n, c, h, w = images.shape
        iterations, samples = self.schedule()
        x = images.clone()
        # one call per iteration: every image's probes at +s, then at -s, written into one reused buffer
        owners = [i for _ in range(2) for i in range(n) for _ in range(samples)]
        sides = x.new_empty((2, n, samples, c, h, w))
        for _ in range(iterations):
            u = torch.stack([torch.randn(samples, c, self.tile, self.tile, generator=g) for g in rngs]).to(x)
            probes = self.sigma * tile_to(u, (h, w))  # (N, samples, C, H, W)
            torch.add(x.unsqueeze(1), probes, out=sides[0])
            torch.sub(x.unsqueeze(1), probes, out=sides[1])
            q_plus, q_minus = oracle(sides.clamp_(0.0, 1.0).view(-1, c, h, w), owners).view(2, n, samples).to(x)
            oracle.report_all(torch.cat([q_plus, q_minus], dim=1).mean(dim=1))
            g = ((q_plus - q_minus)[..., None, None, None] * u).sum(1) / (2 * samples * self.sigma)
            norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
            step = tile_to(g / norm, (h, w))
            x = project_onto_ball((x + self.eta * step).clamp(0.0, 1.0), images, self.eps).clamp(0.0, 1.0)
        return x
