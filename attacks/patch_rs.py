"""Patch-RS: the square-patch threat model of Sparse-RS (Croce, Andriushchenko, Singh, Flammarion and
Hein, "Sparse-RS: a versatile framework for query-efficient sparse black-box adversarial attacks",
AAAI 2022), raising a quality metric's score.

As the follow-up benchmark's code runs it (adversarial-defenses-for-iqa, ``metrics/methods/patch-rs/run.py``,
the Sparse-RS code's ``patches`` threat model; docs/methodology.md, "Black-box attacks"): one square
patch of ``eps`` pixels (169 = 13 x 13) replaces the image at a random place. It starts black with 1000
random sub-squares of colours in {0, 1} per channel painted over it (Sparse-RS's ``random_squares``).
Iteration ``it`` of ``n`` (the budget) moves the patch by up to ``int(0.75 * (1 - it / n) * H)`` pixels
in each direction, ``H`` the image height, when ``it`` is a multiple of 4 and that range is not 0;
otherwise it recolours a random sub-square of the patch (side ``sqrt(p) * side``, ``p`` from
``p_init = 0.8`` halved on Square's schedule) with a random colour in {0, 1}^3, a colour different from
the old one when the sub-square is one pixel; from iteration ``it_start_cu`` on (half-way from the
first one-pixel sub-square to the end, about 6 000 of 10 000 for 13 x 13) it flips one channel of one
pixel instead. A candidate is kept only when q rises strictly. The first query scores the initial
patch; the result is the patched image the search holds, whether or not it beats the clean image, as
the source returns it. It differs from the clean image in at most ``eps`` pixel positions: the class
declares that L0 budget. What still differs from the source's code: docs/differences.md.

Each image's generator (seeded with ``seed``) is drawn from as the source draws from torch's generator,
which it seeds with its seed (0) for every image it attacks: the place (two ``randint``), the initial
patch, then per iteration the sub-square's corner first, a move, a colour as ``sign(2u - 1)`` clamped
to [0, 1] or a channel as ``int(3u)``. With the same seed an image gets the source's result pixel for
pixel (docs/differences.md), not merely one from the same distribution. Each call scores several of an
image's next iterations at once (:class:`~attacks.queries.Lookahead`), with the same draws, queries and
result as one iteration at a time.

ART, torchattacks and foolbox implement Sparse-RS (or none of its patch variant) for a classifier's
margin loss only; none takes a regression objective, so the search is written here.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .base import register_attack
from .budget import Budget
from .presets import Presets
from .queries import BlackBoxAttack, CandidateRows, Lookahead, Oracle, random_int, square_fraction

#: random sub-squares painted over the black patch to initialise it (the Sparse-RS code's count)
_INIT_SQUARES = 1000


def _colour(c: int, rng: torch.Generator) -> torch.Tensor:
    """A random colour (c, 1, 1) in {0, 1}^c as the source draws it: ``sign(2 u - 1)`` clamped to [0, 1]."""
    return torch.sign(2 * torch.rand((c, 1, 1), generator=rng) - 1).clamp(0.0, 1.0)


@register_attack
@dataclasses.dataclass(frozen=True)
class PatchRS(BlackBoxAttack):
    """Sparse-RS with one square patch.

    Attributes:
        queries: query budget per image (the first scores the initial patch).
        seed: seeds each image's generator.
        eps: the patch's area in pixels (its side is ``round(sqrt(eps))``).
        p_init: initial fraction of the patch a recoloured sub-square covers.
        move_every: every this many iterations the patch moves instead of recolouring (while it may move).
    """

    name = "patch-rs"
    budget = Budget.l0("eps")  # only the patch's side x side <= eps pixel positions change
    presets = Presets("patch-rs", "eps", ((0, 16), (1, 8), (2, 4)), integer=True)  # areas for PSNR 30, 35, 40 dB

    eps: int = 169
    p_init: float = 0.8
    move_every: int = 4

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        _, c, h, w = images.shape
        side = max(1, min(math.isqrt(self.eps), h, w))
        # the source's draws, in its order (module docstring): the place, then the initial patch
        places = [(random_int(0, max(0, h - side - 1), rng), random_int(0, max(0, w - side - 1), rng)) for rng in rngs]
        patches = [self._initial_patch(c, side, rng).to(images) for rng in rngs]
        first = oracle(self._paste(images.clone(), patches, places, side))
        oracle.report_all(first)
        single_channel_from = self.single_channel_start(side)

        def propose(i: int, it: int) -> tuple[torch.Tensor, tuple[int, int]]:
            rng, patch, (top, left) = rngs[i], patches[i], places[i]
            s = self._sub_square(it, side)
            reach = int((self.queries - it) / self.queries * 0.75 * h)  # the source's arithmetic, to the bit
            corner = torch.randint(side - s + 1, (2,), generator=rng).tolist()  # drawn on every iteration
            if it % self.move_every == 0 and reach > 0:
                shift = torch.randint(-reach, reach + 1, (2,), generator=rng).tolist()
                return patch, (min(max(top + shift[0], 0), h - side), min(max(left + shift[1], 0), w - side))
            patch = patch.clone()
            window = patch[:, corner[0] : corner[0] + s, corner[1] : corner[1] + s]
            if it >= single_channel_from:  # one channel of one pixel flips
                channel = int((c * torch.rand(1, generator=rng)).long())
                window[channel] = 1.0 - window[channel]
                return patch, (top, left)
            colour = _colour(c, rng).to(images)
            while s == 1 and torch.equal(colour, window):  # a one-pixel sub-square takes a new colour
                colour = _colour(c, rng).to(images)
            window.copy_(colour.expand_as(window))
            return patch, (top, left)

        rows = CandidateRows(images)

        def candidates(owners: list[int], proposals: list[tuple[torch.Tensor, tuple[int, int]]]) -> torch.Tensor:
            edits = [
                ((slice(None), slice(top, top + side), slice(left, left + side)), patch)
                for patch, (top, left) in proposals
            ]
            return rows.build(owners, edits)

        def keep(i: int, proposal: tuple[torch.Tensor, tuple[int, int]]) -> None:
            patches[i], places[i] = proposal

        Lookahead(oracle, images.shape[1:]).run(propose, candidates, keep, first.tolist(), rngs)
        return self._paste(images.clone(), patches, places, side)

    @staticmethod
    def _initial_patch(c: int, side: int, rng: torch.Generator) -> torch.Tensor:
        """Sparse-RS's ``random_squares``: a black patch with :data:`_INIT_SQUARES` random sub-squares of
        1 to ``ceil(sqrt(side)) - 1`` pixels painted over it, each in one random colour of {0, 1}^c."""
        patch = torch.zeros(c, side, side)
        largest = max(1, math.ceil(side**0.5) - 1)
        for _ in range(_INIT_SQUARES):
            s = random_int(1, largest, rng)
            top, left = torch.randint(side - s + 1, (2,), generator=rng).tolist()
            patch[:, top : top + s, left : left + s] = _colour(c, rng)
        return patch

    def _sub_square(self, it: int, side: int) -> int:
        """Side of the sub-square recoloured at iteration ``it``: ``sqrt(p) * side``, at least 1."""
        return max(1, min(side, int(square_fraction(self.p_init, it, self.queries) ** 0.5 * side)))

    def single_channel_start(self, side: int) -> int:
        """The iteration single-channel flips start at: half-way from the first one-pixel sub-square to the
        end (the source's ``it_start_cu``); the budget when sub-squares never shrink to one pixel."""
        first = next((it for it in range(self.queries) if self._sub_square(it, side) == 1), None)
        return self.queries if first is None else first + (self.queries - first) // 2

    @staticmethod
    def _paste(
        out: torch.Tensor, patches: list[torch.Tensor], places: list[tuple[int, int]], side: int
    ) -> torch.Tensor:
        """``out`` (a copy of the images, one row per patch) with each patch pasted at its place, in place."""
        for i, (patch, (top, left)) in enumerate(zip(patches, places, strict=True)):
            out[i, :, top : top + side, left : left + side] = patch
        return out
