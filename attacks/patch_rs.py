"""Patch-RS: the square-patch threat model of Sparse-RS (Croce, Andriushchenko, Singh, Flammarion and
Hein, "Sparse-RS: a versatile framework for query-efficient sparse black-box adversarial attacks",
AAAI 2022), raising a quality metric's score.

One square patch of ``eps`` pixels (169 = 13 x 13) replaces the image at a random place. It starts
black with 1000 random sub-squares of colours in {0, 1} per channel painted over it (the Sparse-RS
code's ``random_squares``); every 4th iteration the patch moves by up to
``0.75 * (1 - it / n) * side`` pixels in each direction, every other iteration a random sub-square
of it (side ``sqrt(p) * side``, ``p`` from ``p_init = 0.8`` halved on Square's schedule) takes a
random colour in {0, 1}^3. A candidate is kept only when q rises strictly, and the patched image is
returned only when its q is strictly above the clean image's (the first query); otherwise the clean
image. The result differs from the clean image in at most ``eps`` pixel positions: the class
declares that L0 budget.

ART, torchattacks and foolbox implement Sparse-RS (or none of its patch variant) for a classifier's
margin loss only; none takes a regression objective, so the search is written here.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .base import register_attack
from .budget import Budget
from .queries import BlackBoxAttack, Oracle, random_int, square_fraction

#: random sub-squares painted over the black patch to initialise it (the Sparse-RS code's count)
_INIT_SQUARES = 1000


@register_attack
@dataclasses.dataclass(frozen=True)
class PatchRS(BlackBoxAttack):
    """Sparse-RS with one square patch.

    Attributes:
        queries: query budget per image (the first scores the clean image, the second the initial patch).
        seed: seeds each image's generator.
        eps: the patch's area in pixels (its side is ``round(sqrt(eps))``).
        p_init: initial fraction of the patch a recoloured sub-square covers.
        move_every: every this many iterations the patch moves instead of recolouring.
    """

    name = "patch-rs"
    budget = Budget.l0("eps")  # only the patch's side x side <= eps pixel positions change

    eps: int = 169
    p_init: float = 0.8
    move_every: int = 4

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        n, c, h, w = images.shape
        side = max(1, min(math.isqrt(self.eps), h, w))
        largest = max(1, math.ceil(side**0.5) - 1)  # initial sub-squares: 1 .. ceil(sqrt(side)) - 1 pixels wide
        patches, places = [], []
        for i in range(n):
            patch = torch.zeros(c, side, side)
            for _ in range(_INIT_SQUARES):
                s = random_int(1, largest, rngs[i])
                top, left = random_int(0, side - s, rngs[i]), random_int(0, side - s, rngs[i])
                patch[:, top : top + s, left : left + s] = self._colour(c, s, rngs[i])
            patches.append(patch.to(images))
            places.append((random_int(0, h - side, rngs[i]), random_int(0, w - side, rngs[i])))
        clean_q = oracle(images)
        oracle.floor = clean_q.tolist()
        best_q = oracle(self._paste(images, patches, places, side)) if self.queries > 1 else clean_q
        oracle.report_all(best_q)
        for it in range(1, self.queries - 1):
            new_patches, new_places = [p.clone() for p in patches], list(places)
            for i in range(n):
                if it % self.move_every == 0:
                    reach = max(1, round(0.75 * (1 - it / self.queries) * side))
                    top, left = places[i]
                    top = min(max(top + random_int(-reach, reach, rngs[i]), 0), h - side)
                    left = min(max(left + random_int(-reach, reach, rngs[i]), 0), w - side)
                    new_places[i] = (top, left)
                else:
                    s = max(1, min(side, int(math.sqrt(square_fraction(self.p_init, it, self.queries)) * side)))
                    top, left = random_int(0, side - s, rngs[i]), random_int(0, side - s, rngs[i])
                    new_patches[i][:, top : top + s, left : left + s] = self._colour(c, s, rngs[i]).to(images)
            q = oracle(self._paste(images, new_patches, new_places, side))
            for i in range(n):
                if q[i] > best_q[i]:
                    patches[i], places[i], best_q[i] = new_patches[i], new_places[i], q[i]
                oracle.report(i, best_q[i])
        patched = self._paste(images, patches, places, side)
        return torch.where((best_q > clean_q)[:, None, None, None], patched, images)

    @staticmethod
    def _colour(c: int, s: int, rng: torch.Generator) -> torch.Tensor:
        """An s x s square of one colour in {0, 1}^c."""
        return torch.randint(0, 2, (c, 1, 1), generator=rng).float().expand(c, s, s)

    @staticmethod
    def _paste(
        images: torch.Tensor, patches: list[torch.Tensor], places: list[tuple[int, int]], side: int
    ) -> torch.Tensor:
        out = images.clone()
        for i, (patch, (top, left)) in enumerate(zip(patches, places, strict=True)):
            out[i, :, top : top + side, left : left + side] = patch
        return out
