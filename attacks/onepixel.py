"""One-pixel attack (Su, Vargas and Sakurai, "One pixel attack for fooling deep neural networks",
IEEE Transactions on Evolutionary Computation, 2019), raising a quality metric's score.

Differential evolution over ``pixels`` genomes ``(row, col, r, g, b)``: row and column within the
image, colours in [0, 255]; it minimises -q of the image with those pixels set, with the follow-up
benchmark's settings: ``maxiter`` 10 generations, a population of about 300 individuals
(``popsize = max(1, 300 // (5 * pixels))`` per parameter, as scipy counts it), recombination 1, no
polishing, no convergence stop, the population scored as one vectorised call per generation. The best image found is
returned when its q is strictly above the clean image's; otherwise the clean image.

Queries: the clean image, then the population at each of ``maxiter + 1`` evaluations. When that
exceeds ``queries`` (a capped CPU run), the population shrinks first, then the generations, so that
``1 + popsize * 5 * pixels * (maxiter + 1) <= queries``. The result changes at most ``pixels``
pixel positions: the class declares that L0 budget.

The search is :func:`scipy.optimize.differential_evolution`; the attack libraries (ART, foolbox,
torchattacks) implement one-pixel only against a classifier's labels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.optimize import differential_evolution

from .base import register_attack
from .budget import Budget
from .queries import BlackBoxAttack, Oracle

_GENES = 5  # row, col, r, g, b


@register_attack
@dataclasses.dataclass(frozen=True)
class OnePixel(BlackBoxAttack):
    """One-pixel attack by differential evolution.

    Attributes:
        queries: query budget per image.
        seed: seeds the differential evolution of each image.
        pixels: pixels changed (the L0 budget).
        maxiter: generations of differential evolution.
        population: individuals wanted (scipy's ``popsize`` is this over the genome length).
        recombination: differential evolution's crossover probability.
    """

    name = "onepixel"
    budget = Budget.l0("pixels")  # a genome sets `pixels` pixel positions, nothing else

    pixels: int = 3
    maxiter: int = 10
    population: int = 300
    recombination: float = 1.0

    def schedule(self) -> tuple[int, int]:
        """``(popsize, maxiter)`` that fit the query budget (scipy's popsize: individuals per parameter)."""
        dims = _GENES * self.pixels
        popsize = max(1, self.population // dims)
        maxiter = self.maxiter
        spare = self.queries - 1  # the clean image's score
        if popsize * dims * (maxiter + 1) > spare:
            popsize = max(1, spare // (dims * (maxiter + 1)))
        if popsize * dims * (maxiter + 1) > spare:
            maxiter = spare // (popsize * dims) - 1
        if maxiter < 0:
            raise ValueError(
                f"{self.name}: {self.queries} queries cannot score one generation of {dims} individuals for "
                f"{self.pixels} pixels; give queries >= {dims + 1} or fewer pixels"
            )
        return popsize, maxiter

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        n, _, h, w = images.shape
        popsize, maxiter = self.schedule()
        clean_q = oracle(images)
        out = images.clone()
        bounds = [(0, h - 1e-6), (0, w - 1e-6), (0, 255), (0, 255), (0, 255)] * self.pixels
        for i in range(n):
            best = {"q": float(clean_q[i]), "image": images[i]}
            oracle.report(i, best["q"])

            def minus_q(genomes: np.ndarray, i: int = i, best: dict = best) -> np.ndarray:
                candidates = self._apply(images[i], genomes.T)
                q = oracle(candidates, [i] * candidates.shape[0])
                top = int(q.argmax())
                if q[top] > best["q"]:
                    best.update(q=float(q[top]), image=candidates[top])
                oracle.report(i, best["q"])
                return -q.double().numpy()

            differential_evolution(
                minus_q,
                bounds,
                maxiter=maxiter,
                popsize=popsize,
                recombination=self.recombination,
                polish=False,
                tol=0.0,
                atol=-1.0,  # no convergence stop: every generation runs, as the query count above assumes
                vectorized=True,
                updating="deferred",
                rng=np.random.default_rng(self.seed),
            )
            out[i] = best["image"]
        return out

    def _apply(self, image: torch.Tensor, genomes: np.ndarray) -> torch.Tensor:
        """The image with each genome's pixels set: genomes (S, 5 * pixels) -> candidates (S, 3, H, W)."""
        genes = torch.from_numpy(np.asarray(genomes, dtype=np.float64)).reshape(len(genomes), self.pixels, _GENES)
        candidates = image.unsqueeze(0).repeat(len(genomes), 1, 1, 1)
        rows, cols = genes[..., 0].long(), genes[..., 1].long()
        colours = (genes[..., 2:] / 255).clamp(0, 1).to(image)
        which = torch.arange(len(genomes)).unsqueeze(1).expand_as(rows)
        candidates[which, :, rows, cols] = colours
        return candidates
