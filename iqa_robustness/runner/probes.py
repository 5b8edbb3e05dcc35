"""The evidence of the evaluation checks that needs the metric itself: its gradient and a second scoring.

Two of the checks of docs/verdict.md look at the metric rather than at the cases' scores:

- **no gradient**: the gradient of the summed attack loss J = 1 - q / range with respect to the clean
  images, one backward pass; per image, the share of its elements that are zero or not finite. A
  rounding step or an argmax in front gives 1.0 everywhere; CNNIQA's min/max pooling and NIQE's
  block crop leave 0.4 to 0.65 at 160 px, legitimately. Only for a metric declared differentiable.
- **random metric**: the clean images scored again, without gradients, and compared with the clean
  scores every attack of the metric shares; the largest difference as a share of the metric's range.

Both run on at most :data:`PROBE_IMAGES` of the images the metric scores (the first ones), once per
metric x dataset, when the first case of that pair runs; each case records the numbers as its
``probes`` (the ``check_*`` keys of :mod:`iqa_robustness.scores.checks`), with the seconds each took.
A probe that raises is logged and leaves its evidence out (the check then reads "not run"): it never
costs a case.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time

import torch

from iqa_robustness.attacks.base import loss_grad
from iqa_robustness.data.images import Dataset
from iqa_robustness.runner.config import sync_device
from iqa_robustness.runner.resources import Resources
from iqa_robustness.scores.checks import (
    CHECK_DEAD_GRADIENT,
    CHECK_DIFFERENTIABLE,
    CHECK_GRADIENT_SECONDS,
    CHECK_IMAGES,
    CHECK_NONFINITE_GRADIENT,
    CHECK_RESCORE_DIFFERENCE,
    CHECK_RESCORE_SECONDS,
)

log = logging.getLogger(__name__)

#: clean images each probe looks at, at most (the cost stays that of one attack step on one batch)
PROBE_IMAGES = 8


class MetricProbes:
    """The probes of one session, each metric x dataset probed once (see the module docstring)."""

    def __init__(self, resources: Resources, images: int = PROBE_IMAGES) -> None:
        self.resources = resources
        self.images = images
        self._done: dict[tuple[str, str], dict[str, float]] = {}

    def evidence(self, metric_name: str, dataset_name: str) -> dict[str, float]:
        """The ``check_*`` evidence of ``metric_name`` on ``dataset_name`` (an empty dict for a set of clips).

        The probes draw from torch's global generators inside a forked state, so a random metric's
        attacks draw the same numbers whether or not its probe ran first.
        """
        key = (metric_name, dataset_name)
        if key not in self._done:
            devices = [self.resources.device] if self.resources.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                self._done[key] = self._probe(metric_name, dataset_name)
        return dict(self._done[key])

    def _probe(self, metric_name: str, dataset_name: str) -> dict[str, float]:
        res = self.resources
        if not isinstance(res.dataset(dataset_name, metric_name), Dataset):
            return {}  # clips are attacked whole by a video metric: no image probe applies
        screened = res.screened(metric_name, dataset_name)
        items = screened.dataset.items[: self.images]
        if not items:
            return {}
        dataset = dataclasses.replace(screened.dataset, items=items)
        metric = res.metric(metric_name)
        out: dict[str, float] = {
            CHECK_IMAGES: float(len(items)),
            CHECK_DIFFERENTIABLE: float(metric.spec.differentiable),
        }
        try:
            out.update(self._rescore(metric_name, dataset, screened.clean))
        except Exception as exc:  # a probe never costs a case: its check reads "not run"
            log.warning("%s on %s: the random-metric probe failed (%s: %s)", metric_name, dataset_name,
                        type(exc).__name__, exc)  # fmt: skip
        if metric.spec.differentiable:
            try:
                out.update(self._gradient(metric_name, dataset))
            except Exception as exc:
                log.warning("%s on %s: the gradient probe failed (%s: %s)", metric_name, dataset_name,
                            type(exc).__name__, exc)  # fmt: skip
        return out

    def _rescore(self, metric_name: str, dataset: Dataset, clean: dict[str, float]) -> dict[str, float]:
        """The largest |second scoring - clean score| / range over the probed images."""
        res = self.resources
        metric = res.metric(metric_name)
        start = _clock(res)
        differences = []
        with torch.no_grad():
            for names, batch, reference in res.metric_batches(dataset, metric_name):
                again = res.run_batched(metric_name, metric, batch, reference).float().cpu().tolist()
                differences += [abs(a - clean[n]) / metric.spec.range for n, a in zip(names, again, strict=True)]
        seconds = _clock(res) - start
        worst = max(differences) if all(math.isfinite(d) for d in differences) else math.inf
        return {CHECK_RESCORE_DIFFERENCE: worst, CHECK_RESCORE_SECONDS: seconds}

    def _gradient(self, metric_name: str, dataset: Dataset) -> dict[str, float]:
        """Per probed image, the share of loss-gradient elements that are zero or not finite: their median."""
        res = self.resources
        metric = res.metric(metric_name)
        start = _clock(res)
        shares: list[float] = []
        nonfinite = 0
        with torch.enable_grad():
            for _, batch, reference in res.metric_batches(dataset, metric_name):
                grad = res.run_batched(metric_name, lambda x: loss_grad(metric, x), batch, reference)
                dead = (grad == 0) | ~torch.isfinite(grad)
                shares += dead.flatten(1).float().mean(dim=1).cpu().tolist()
                nonfinite += int((~torch.isfinite(grad)).flatten(1).any(dim=1).sum())
        seconds = _clock(res) - start
        return {
            CHECK_DEAD_GRADIENT: statistics.median(shares),
            CHECK_NONFINITE_GRADIENT: float(nonfinite),
            CHECK_GRADIENT_SECONDS: seconds,
        }


def _clock(res: Resources) -> float:
    sync_device(res.device)
    return time.perf_counter()
