"""Parsimonious black-box attack (Moon, An and Song, "Parsimonious black-box adversarial attacks via
efficient combinatorial optimization", ICML 2019), raising a quality metric's score.

The perturbation lives on the vertices of the L-inf ball, one sign per block of ``block_size`` x
``block_size`` pixels and channel, applied by nearest-neighbour upsampling: ``clamp(x0 + eps * A)``.
Every block starts at ``-eps``. The blocks are visited in a random order in mini-batches of
``batch_blocks``; on each mini-batch a lazy-greedy insertion flips to ``+eps`` the blocks that raise q
most (each block's gain is measured once, then re-measured only when it reaches the top of the
queue, and a flip is kept only when it raises q strictly), then a lazy-greedy deletion does the same
for flipping blocks back. After a full pass the block size halves (32, 16, ..., 1), keeping the
signs, until the query budget is spent. The result is the searched image when its q is strictly
above the clean image's (the first query), otherwise the clean image.

The number of queries a mini-batch takes depends on the image, so the images of a batch are searched
one after the other (their queries still go to the metric as batches of candidates). ART, foolbox and
torchattacks do not implement this attack; it is written here.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .base import register_attack
from .budget import Budget
from .queries import BlackBoxAttack, Oracle


@register_attack
@dataclasses.dataclass(frozen=True)
class Parsimonious(BlackBoxAttack):
    """Parsimonious attack (lazy-greedy local search over block signs).

    Attributes:
        queries: query budget per image (the first scores the clean image, the second the ``-eps`` start).
        seed: seeds each image's block order.
        eps: L-inf bound.
        block_size: the initial block side in pixels, halved after every full pass down to 1.
        batch_blocks: blocks per mini-batch of the local search.
    """

    name = "parsimonious"
    budget = Budget.linf("eps")  # every pixel is clean +- eps, clamped to [0, 1]

    eps: float = 0.05
    block_size: int = 32
    batch_blocks: int = 64

    def search(self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
        return torch.stack([self._one(oracle, i, images[i], rngs[i]) for i in range(images.shape[0])])

    def _image(self, x0: torch.Tensor, signs: torch.Tensor, block: int) -> torch.Tensor:
        """``clamp(x0 + eps * upsample(signs))`` for a stack of sign grids (S, C, h, w) of ``block`` pixels."""
        return (x0 + self.eps * _upsample(signs, block, x0.shape[-2:])).clamp(0.0, 1.0)

    def _one(self, oracle: Oracle, i: int, x0: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        c, h, w = x0.shape
        block = max(1, min(self.block_size, h, w))
        signs = -torch.ones(1, c, -(-h // block), -(-w // block), dtype=x0.dtype)
        clean_q = float(oracle(x0.unsqueeze(0), [i])[0])
        oracle.floor[i] = clean_q
        signs, block, best_q = self._search(oracle, i, x0, signs, block, rng)
        return self._image(x0, signs, block)[0] if best_q > clean_q else x0

    def _search(
        self, oracle: Oracle, i: int, x0: torch.Tensor, signs: torch.Tensor, block: int, rng: torch.Generator
    ) -> tuple[torch.Tensor, int, float]:
        """The local search from ``signs`` until the budget is spent: ``(signs, block, q)`` at the end."""
        h, w = x0.shape[-2:]
        if oracle.left(i) == 0:
            return signs, block, -math.inf
        best_q = float(oracle(self._image(x0, signs, block), [i])[0])
        oracle.report(i, best_q)
        while oracle.left(i) > 0:
            order = torch.randperm(signs.numel(), generator=rng)
            for start in range(0, len(order), self.batch_blocks):
                chunk = order[start : start + self.batch_blocks]
                for flip_from in (-1.0, 1.0):  # insertion (-eps -> +eps), then deletion
                    members = [int(b) for b in chunk if signs.view(-1)[b] == flip_from]
                    signs, best_q = self._lazy_greedy(oracle, i, x0, signs, block, best_q, members)
                    if oracle.left(i) == 0:
                        return signs, block, best_q
            if block > 1:  # the next pass on blocks of half the side, keeping the perturbation
                fine = max(1, block // 2)
                signs = _upsample(signs, block, (h, w))[..., ::fine, ::fine].contiguous()
                block = fine
        return signs, block, best_q

    def _lazy_greedy(
        self,
        oracle: Oracle,
        i: int,
        x0: torch.Tensor,
        signs: torch.Tensor,
        block: int,
        best_q: float,
        members: list[int],
    ) -> tuple[torch.Tensor, float]:
        """Flip the members that raise q, best first, re-measuring a gain only when it reaches the top."""
        members = members[: oracle.left(i)]
        if not members:
            return signs, best_q
        flipped = signs.repeat(len(members), 1, 1, 1)
        for k, b in enumerate(members):
            flipped[k].view(-1)[b] *= -1
        measured = oracle(self._image(x0, flipped, block), [i] * len(members)).tolist()
        oracle.report(i, best_q)
        # (gain, block, q at measurement); sorted best first
        queue = sorted(((q - best_q, b, q) for q, b in zip(measured, members, strict=True)), reverse=True)
        fresh = True  # the gains were measured against the current signs
        while queue and queue[0][0] > 0:
            gain, b, q = queue.pop(0)
            if not fresh:
                if oracle.left(i) == 0:
                    break
                candidate = signs.clone()
                candidate.view(-1)[b] *= -1
                q = float(oracle(self._image(x0, candidate, block), [i])[0])
                gain = q - best_q
                if queue and gain < queue[0][0]:  # no longer the best: back in the queue, re-measured later
                    queue.append((gain, b, q))
                    queue.sort(reverse=True)
                    oracle.report(i, best_q)
                    continue
            if q > best_q:
                signs = signs.clone()
                signs.view(-1)[b] *= -1
                best_q = q
                fresh = False
            oracle.report(i, best_q)
        return signs, best_q


def _upsample(signs: torch.Tensor, block: int, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling of block values to pixels, cut to ``size`` (H, W)."""
    up = signs.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return up[..., : size[0], : size[1]]
