"""One-pixel attack (Su, Vargas and Sakurai, "One pixel attack for fooling deep neural networks",
IEEE Transactions on Evolutionary Computation, 2019), raising a quality metric's score.

As the follow-up benchmark's code runs it (adversarial-defenses-for-iqa, ``metrics/methods/onepixel/run.py``;
docs/methodology.md, "Black-box attacks"): differential evolution over ``pixels`` genomes
``(row, col, r, g, b)`` in ``[0, H) x [0, W) x [0, 256)^3``, each gene floored to an integer (the
source's ``xs.astype(int)``), so a pixel takes an integer colour ``k / 255``; it minimises -q of the
image with those pixels set, with the benchmark's settings: ``maxiter`` 10 generations, a population
of about 300 individuals (``popsize = max(1, 300 // (5 * pixels))`` per parameter, as scipy counts
it), recombination 1, no polishing, scipy's convergence test with the source's ``tol=0.01, atol=-1``
(it stops early only when the population's scores agree to about 1% of their mean), the population
scored as one vectorised call per generation. The result is differential evolution's best image,
whether or not it beats the clean image, as the source returns it. The source also truncates the
whole image to 8 bits first; that changes nothing on an 8-bit image, and is left out here, so that
only the genomes' pixels change (docs/differences.md).

Queries: the population at each of ``maxiter + 1`` evaluations (3 300 with the defaults), fewer when
the convergence test stops early. When that exceeds ``queries`` (a capped CPU run), the population
shrinks first, then the generations, so that ``popsize * 5 * pixels * (maxiter + 1) <= queries``.
The result changes at most ``pixels`` pixel positions: the class declares that L0 budget.

The search is :func:`scipy.optimize.differential_evolution`; the attack libraries (ART, foolbox,
torchattacks) implement one-pixel only against a classifier's labels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from scipy.optimize import differential_evolution

from .base import register_attack
from .budget import Budget
from .presets import Presets
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
        tol, atol: scipy's convergence test, ``std(scores) <= atol + tol * |mean(scores)|`` (the source's
            values; ``tol=0`` runs every generation).
    """

    name = "onepixel"
    budget = Budget.l0("pixels")  # a genome sets `pixels` pixel positions, nothing else
    presets = Presets("onepixel", "pixels", ((0, 4), (1, 8), (2, 16)), integer=True)  # 10, 20, 40 pixels

    pixels: int = 3
    maxiter: int = 10
    population: int = 300
    recombination: float = 1.0
    tol: float = 0.01
    atol: float = -1.0

    def schedule(self) -> tuple[int, int]:
        """``(popsize, maxiter)`` that fit the query budget (scipy's popsize: individuals per parameter)."""
        dims = _GENES * self.pixels
        popsize = max(1, self.population // dims)
        maxiter = self.maxiter
        if popsize * dims * (maxiter + 1) > self.queries:
            popsize = max(1, self.queries // (dims * (maxiter + 1)))
        if popsize * dims * (maxiter + 1) > self.queries:
            maxiter = self.queries // (popsize * dims) - 1
        if maxiter < 0:
            raise ValueError(
                f"{self.name}: {self.queries} queries cannot score one generation of {dims} individuals for "
                f"{self.pixels} pixels; give queries >= {dims} or fewer pixels"
            )
        return popsize, maxiter

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        n, _, h, w = images.shape
        popsize, maxiter = self.schedule()
        out = images.clone()
        bounds = [(0, h), (0, w), (0, 256), (0, 256), (0, 256)] * self.pixels
        for i in range(n):
            best = [-math.inf]

            def minus_q(genomes: np.ndarray, i: int = i, best: list[float] = best) -> np.ndarray:
                q = oracle(self._apply(images[i], genomes.T), [i] * genomes.shape[1])
                best[0] = max(best[0], float(q.max()))  # differential evolution keeps its best individual
                oracle.report(i, best[0])
                return -q.double().numpy()

            found = differential_evolution(
                minus_q,
                bounds,
                maxiter=maxiter,
                popsize=popsize,
                recombination=self.recombination,
                polish=False,
                tol=self.tol,
                atol=self.atol,
                vectorized=True,
                updating="deferred",
                rng=np.random.default_rng(self.seed),
            )
            out[i] = self._apply(images[i], found.x[None])[0]
        return out

    def _apply(self, image: torch.Tensor, genomes: np.ndarray) -> torch.Tensor:
        """The image with each genome's pixels set: genomes (S, 5 * pixels) -> candidates (S, 3, H, W).

        Genes are floored to integers as the source's ``astype(int)`` does (and kept inside the image
        and [0, 255], where a gene at its upper bound would fall outside).
        """
        h, w = image.shape[-2:]
        genes = np.floor(np.asarray(genomes, dtype=np.float64)).reshape(len(genomes), self.pixels, _GENES)
        genes = np.minimum(genes, [h - 1, w - 1, 255, 255, 255])
        genes = torch.from_numpy(genes).long()
        candidates = image.unsqueeze(0).repeat(len(genomes), 1, 1, 1)
        rows, cols = genes[..., 0], genes[..., 1]
        colours = (genes[..., 2:].to(image.dtype) / 255).to(image.device)
        which = torch.arange(len(genomes)).unsqueeze(1).expand_as(rows)
        candidates[which, :, rows, cols] = colours
        return candidates
