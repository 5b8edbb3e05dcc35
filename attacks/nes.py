"""NES gradient estimation (Ilyas, Engstrom, Athalye and Lin, "Black-box adversarial attacks with
limited queries and information", ICML 2018), raising a quality metric's score.

Each iteration draws ``samples`` Gaussian directions ``u`` of 3 x ``tile`` x ``tile``, tiles them over
the image and estimates the gradient of q by antithetic finite differences,
``g = sum_k [q(x + s u_k) - q(x - s u_k)] u_k / (2 * samples * s)`` (``2 * samples`` queries, the
probes clamped to [0, 1]); the step ``x <- clip(x + eta * tile(g) / ||g||)`` is projected onto the
L-inf ball of ``eps`` around the clean image and kept only when q rises strictly (one more query).
The attack stops after ``iters`` iterations or when the next one would exceed the query budget.

ART and foolbox implement NES-style estimation inside classifier attacks (margin or cross-entropy
losses) only; none takes a regression objective, so the estimator is written here.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import project_onto_ball, register_attack
from .budget import Budget
from .queries import BlackBoxAttack, Oracle, tile_to


@register_attack
@dataclasses.dataclass(frozen=True)
class NES(BlackBoxAttack):
    """NES black-box gradient ascent on q.

    Attributes:
        queries: query budget per image (the first scores the clean image).
        seed: seeds each image's directions.
        eps: L-inf bound around the clean image.
        sigma: finite-difference step ``s``.
        eta: step size on the normalised estimate.
        samples: directions per iteration (each takes two queries).
        iters: iterations at most.
        tile: side of the directions, tiled over the image.
    """

    name = "nes"
    budget = Budget.linf("eps")  # every step is projected onto the eps ball around the clean image

    eps: float = 0.1
    sigma: float = 0.001
    eta: float = 0.1
    samples: int = 20
    iters: int = 250
    tile: int = 32

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        n, c, h, w = images.shape
        x = images.clone()
        best_q = oracle(x)
        oracle.report_all(best_q)
        per_iteration = 2 * self.samples + 1
        for _ in range(self.iters):
            if oracle.left(0) < per_iteration:  # every image has made the same number of queries
                break
            u = torch.stack([torch.randn(self.samples, c, self.tile, self.tile, generator=g) for g in rngs]).to(x)
            probes = self.sigma * tile_to(u, (h, w))  # (N, samples, C, H, W)
            plus = (x.unsqueeze(1) + probes).clamp(0.0, 1.0)
            minus = (x.unsqueeze(1) - probes).clamp(0.0, 1.0)
            owners = [i for i in range(n) for _ in range(self.samples)]
            q_plus = oracle(plus.flatten(0, 1), owners).view(n, self.samples).to(x)
            q_minus = oracle(minus.flatten(0, 1), owners).view(n, self.samples).to(x)
            g = ((q_plus - q_minus)[..., None, None, None] * u).sum(1) / (2 * self.samples * self.sigma)
            norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
            step = tile_to(g / norm, (h, w))
            candidate = project_onto_ball((x + self.eta * step).clamp(0.0, 1.0), images, self.eps).clamp(0.0, 1.0)
            q = oracle(candidate)
            better = q > best_q
            x[better] = candidate[better]
            best_q = torch.where(better, q, best_q)
            oracle.report_all(best_q)
        return x
