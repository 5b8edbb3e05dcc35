"""``--transfer-to``: a case's adversarial images scored by other metrics, batch by batch as the attack makes them.

docs/methodology.md, "Transferability": each target's clean scores of the source's inputs are computed once
per target and dataset (:meth:`Resources.transfer_clean
<iqa_robustness.runner.resources.Resources.transfer_clean>`) and shared by every case; its scores
of the adversarial images come from the same batches the source scored, a full-reference target
with each JPEG copy's clean image bound as its reference. A target that cannot be built or fails
on the case is recorded with its error and leaves the case's other results alone; an image a
target cannot take is left out of that target's scores only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from iqa_robustness.data.images import Dataset
from iqa_robustness.runner.resources import Resources
from iqa_robustness.scores.transfer import attacked_key, clear_key, score_transfer

log = logging.getLogger(__name__)


def transfer_error(target: str, exc: BaseException) -> str:
    """What a failed target records: the error and what to do about it."""
    text = (str(exc).strip() or type(exc).__name__)[:400]
    what = f"{target} did not score the adversarial images: {type(exc).__name__}: {text}"
    if "--transfer-to" in text:  # the error already says what to do
        return what
    return f"{what} (fix the cause above, or leave {target} out of --transfer-to)"


class TransferScorer:
    """The targets of one case: their clean scores, their scores of each adversarial batch, their group scores."""

    def __init__(self, resources: Resources, source: str, dataset_name: str, targets: Sequence[str]) -> None:
        self.resources = resources
        self.targets = [t for t in dict.fromkeys(targets) if t != source]
        self.errors: dict[str, str] = {}
        self.clean: dict[str, dict[str, float]] = {}
        self.lower_better: dict[str, bool] = {}
        self.full_reference: dict[str, bool] = {}
        for target in self.targets:
            try:
                metric = resources.metric(target)
                self.lower_better[target] = metric.lower_better
                self.full_reference[target] = metric.spec.is_full_reference
                self.clean[target] = resources.transfer_clean(target, source, dataset_name)
            except Exception as exc:  # one target's failure (weights, inputs) must not cost the case
                self._fail(target, exc)

    @property
    def live(self) -> list[str]:
        """The targets still scoring (no error so far)."""
        return [t for t in self.targets if t not in self.errors]

    def _fail(self, target: str, exc: BaseException) -> None:
        self.errors[target] = transfer_error(target, exc)
        log.warning("transfer: %s", self.errors[target])

    def score_batch(self, dataset: Dataset, names: list[str], adversarial: torch.Tensor) -> dict[str, list[float]]:
        """Each live target's raw scores of one adversarial batch (NaN for an image it raised on)."""
        items = {item.image_name: item for item in dataset.items}
        out: dict[str, list[float]] = {}
        for target in self.live:
            try:
                reference = None
                if self.full_reference[target]:
                    reference = self.resources.reference_batch(items, names, target)
                out[target] = self._scores(target, adversarial, reference, names)
            except Exception as exc:  # see __init__
                self._fail(target, exc)
        return out

    def _scores(
        self, target: str, batch: torch.Tensor, reference: torch.Tensor | None, names: Sequence[str]
    ) -> list[float]:
        metric = self.resources.metric(target)
        draws = self.resources.image_draws(names)  # a defended target: each image its own draw
        with torch.no_grad():
            try:
                return self.resources.run_batched(target, metric, batch, reference, draws).float().cpu().tolist()
            except (ValueError, RuntimeError, AssertionError) as exc:
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise
            scores = []
            for i in range(batch.shape[0]):  # one image can sink a batch: the others keep their scores
                one = None if reference is None else reference[i : i + 1]
                try:
                    with metric.reference(one), draws.rows(i, i + 1).bound():
                        scores.append(float(metric(batch[i : i + 1]).float().cpu()[0]))
                except (ValueError, AssertionError, RuntimeError):
                    scores.append(math.nan)
            return scores

    def annotate(self, row: dict[str, Any], name: str, index: int, attacked: Mapping[str, list[float]]) -> None:
        """Add ``clear@<target>`` / ``attacked@<target>`` of image ``name`` (batch position ``index``) to its row."""
        for target in self.targets:
            clean = self.clean.get(target, {})
            row[clear_key(target)] = clean.get(name, math.nan)
            scores = attacked.get(target)
            row[attacked_key(target)] = scores[index] if scores is not None and name in clean else math.nan

    def results(
        self, rows: Sequence[Mapping[str, Any]], targets: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{target: scores}`` of the case (``{"error": why}`` for a target that failed or scored nothing).

        Args:
            targets: the targets to score (default: all); the others' scores stay in the rows only.
        """
        out: dict[str, dict[str, Any]] = {}
        for target in self.targets if targets is None else [t for t in self.targets if t in targets]:
            if target in self.errors:
                out[target] = {"error": self.errors[target]}
                continue
            try:
                lower_better = self.lower_better[target]
                out[target] = {**score_transfer(rows, target, lower_better), "lower_better": lower_better}
            except ValueError as exc:
                out[target] = {"error": transfer_error(target, exc)}
        return out
