"""Square attack, L-inf (Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020), raising a quality metric's score.

Random search on the vertices of the L-inf ball: start at the clean image; every iteration draws a
square window of side ``round(sqrt(p * H * W))`` at a random place, sets the perturbation inside it to
a per-channel constant ``+-eps`` and keeps the candidate only when q rises strictly. The window's
area fraction ``p`` starts at ``p_init`` and halves on the paper's schedule (:func:`square_fraction`),
rescaled to the query budget. The whole image is searched, as in the original attack (the follow-up
benchmark's code searched only its top-left 256 x 256 region).

ART, torchattacks and foolbox implement Square for a classifier's margin loss only; none takes a
regression objective such as a quality score, so the search is written here.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import register_attack
from .budget import Budget
from .queries import BlackBoxAttack, Oracle, random_int, square_fraction

#: draws of a window that would leave the image unchanged before one is queried anyway
_REDRAWS = 10


@register_attack
@dataclasses.dataclass(frozen=True)
class Square(BlackBoxAttack):
    """Square attack (L-inf).

    Attributes:
        queries: query budget per image (the clean image's score is the first).
        seed: seeds each image's generator.
        eps: L-inf bound.
        p_init: initial fraction of the image a window covers.
    """

    name = "square"
    budget = Budget.linf("eps")  # every pixel of the result is clean +- eps or clean, clamped to [0, 1]

    eps: float = 0.1
    p_init: float = 0.05

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        n, c, h, w = images.shape
        best = images.clone()
        best_q = oracle(best)
        oracle.report_all(best_q)
        for it in range(1, self.queries):
            side = max(1, min(round((square_fraction(self.p_init, it, self.queries) * h * w) ** 0.5), h - 1, w - 1))
            candidates = best.clone()
            for i in range(n):
                top, left = random_int(0, h - side, rngs[i]), random_int(0, w - side, rngs[i])
                window = (slice(None), slice(top, top + side), slice(left, left + side))
                for _ in range(_REDRAWS):  # a window already at these vertices would waste a query
                    signs = torch.randint(0, 2, (c, 1, 1), generator=rngs[i]).to(images) * 2 - 1
                    patch = (images[i][window] + self.eps * signs).clamp(0.0, 1.0)
                    if not torch.equal(patch, best[i][window]):
                        break
                candidates[i][window] = patch
            q = oracle(candidates)
            better = q > best_q
            best[better] = candidates[better]
            best_q = torch.where(better, q, best_q)
            oracle.report_all(best_q)
        return best
