"""Square attack, L-inf (Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020), raising a quality metric's score.

Random search on the vertices of the L-inf ball, as the follow-up benchmark's code runs it
(adversarial-defenses-for-iqa, ``metrics/methods/square-attack/run.py``; docs/methodology.md,
"Black-box attacks"): start at the clean image; every iteration draws a square window at a random
place, sets the perturbation inside it to a per-channel constant ``+-eps`` (signs redrawn until the
window changes the image) and keeps the candidate only when q rises strictly. The window's area
fraction ``p`` starts at ``p_init`` and halves on the paper's schedule (:func:`square_fraction`),
rescaled to the query budget. The windows live on a fixed 256 x 256 grid as in the source: side
``round(sqrt(p * 256 * 256))``, inside the image's top-left 256 x 256 region
(:class:`~attacks.queries.SquareWindows`); ``grid=0`` searches the whole image with windows of
``sqrt(p * H * W)``. What still differs from the source's code: docs/differences.md. Each call scores
several of an image's next iterations at once (:class:`~attacks.queries.Lookahead`), with the same draws,
queries and result as one iteration at a time.

ART, torchattacks and foolbox implement Square for a classifier's margin loss only; none takes a
regression objective such as a quality score, so the search is written here.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import register_attack
from .budget import Budget
from .presets import Presets
from .queries import (
    BlackBoxAttack,
    CandidateRows,
    Lookahead,
    Oracle,
    SquareWindows,
    check_grid,
    signs_that_change,
    square_fraction,
)


@register_attack
@dataclasses.dataclass(frozen=True)
class Square(BlackBoxAttack):
    """Square attack (L-inf).

    Attributes:
        queries: query budget per image (the clean image's score is the first).
        seed: seeds each image's generator.
        eps: L-inf bound.
        p_init: initial fraction of the grid a window covers.
        grid: side of the square grid the windows are drawn on (the source's 256); 0: the whole image.
    """

    name = "square"
    budget = Budget.linf("eps")  # every pixel of the result is clean +- eps or clean, clamped to [0, 1]
    presets = Presets("square-attack", "eps", ((0, 2), (1, 4), (2, 8), (3, 16)))  # --eps b: eps = b

    eps: float = 0.1
    p_init: float = 0.05
    grid: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self)

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        _, c, h, w = images.shape
        windows = SquareWindows.on(self.grid, h, w)
        best = images.clone()
        best_q = oracle(best)
        oracle.report_all(best_q)

        def propose(i: int, it: int) -> tuple[tuple[slice, ...], torch.Tensor]:
            side = windows.side(square_fraction(self.p_init, it - 1, self.queries))  # the source counts from 0
            window = (slice(None), *windows.corner(side, rngs[i]))
            values = signs_that_change(
                lambda signs: (images[i][window] + self.eps * signs).clamp(0.0, 1.0), best[i][window], c, rngs[i]
            )
            return window, values

        rows = CandidateRows(best)

        def candidates(owners: list[int], proposals: list[tuple[tuple[slice, ...], torch.Tensor]]) -> torch.Tensor:
            return rows.build(owners, proposals)

        def keep(i: int, proposal: tuple[tuple[slice, ...], torch.Tensor]) -> None:
            window, values = proposal
            best[i][window] = values
            rows.held_changed(i, window)

        Lookahead(oracle, images.shape[1:]).run(propose, candidates, keep, best_q.tolist(), rngs)
        return best
