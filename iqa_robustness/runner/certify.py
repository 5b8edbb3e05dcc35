"""Certify cases: each image's median-smoothing certificate, beside what attacks in the same L2 ball achieve.

For every image ``x`` of the dataset (docs/certify.md): ``n`` noisy copies ``clamp(x + N(0, sigma^2 I))``
scored by the metric give the smoothed score ``h(x)`` (their lower median) and the certified interval
at L2 radius ``eps`` (:mod:`iqa_robustness.scores.certificate`). Then the attacks: the session's
image attacks run on the metric itself, their perturbations scaled onto the L2 ball of radius
``eps`` (``projected``), and the certify spec's own L2 PGD on the smoothed metric (EoT), on a
differentiable metric. Each attacked image's smoothed score is estimated like the clean one (``n``
fresh noise samples), and so is the clean image's once more (``resampled``: how far the estimate
moves with no attack at all). Every one of those estimates must lie in the certified interval.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.base import project_l2
from iqa_robustness.attacks.certify import GPU_SAMPLES, Certify
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.conventions import dataset_slug
from iqa_robustness.metrics import get_spec
from iqa_robustness.progress import Progress
from iqa_robustness.runner.cases import Outcome
from iqa_robustness.runner.config import SuiteConfig, at_query_limit, sync_device
from iqa_robustness.runner.grid import CaseSpec
from iqa_robustness.runner.resources import Resources
from iqa_robustness.scores.certificate import (
    ACHIEVED_BY,
    ACHIEVED_L2,
    BASE_CLEAR,
    CERTIFICATE_SECONDS,
    Ranks,
    certificate_ranks,
    certificate_row,
    certify_samples,
    smoothed_median,
)
from iqa_robustness.scores.formulas import image_distortion
from iqa_robustness.scores.rows import scored_rows, skipped_row

log = logging.getLogger(__name__)

#: the label of the certify spec's own attack (L2 PGD with EoT on the smoothed metric) in the rows
PGD_LABEL = "pgd-l2-eot"
#: noisy copies scored per metric call: this many times the session's batch size (no gradients are kept)
SAMPLE_BATCHES = 4


def uncertifiable_reason(metric_name: str) -> str | None:
    """Why a certify case cannot run on this metric, or ``None`` when it can."""
    if get_spec(metric_name).is_video:
        return (
            f"{metric_name} is a video metric: the certificate smooths one image's score; "
            "certify an image metric (on a video set it scores the frames)"
        )
    return None


class CertifyCaseRunner:
    """Certify cases on an image dataset (or on a video set's frames, for an image metric)."""

    def __init__(self, resources: Resources, config: SuiteConfig) -> None:
        self.resources = resources
        self.config = config

    def run(self, case: CaseSpec, attack: Attack, perturbation: Perturbation | None) -> Outcome:
        if not isinstance(attack, Certify) or attack.n is None:
            raise TypeError(f"{case.id}: a certify case runs a Certify spec with its samples resolved, not {attack!r}")
        reason = uncertifiable_reason(case.metric)
        if reason is not None:
            raise ValueError(reason)
        res = self.resources
        metric = res.metric(case.metric)
        ranks = certificate_ranks(attack.n, attack.sigma, attack.eps, attack.alpha)
        attacks = self.attacks(case, attack)
        screened = res.screened(case.metric, case.dataset)
        out = Outcome(max_l2=0.0)
        progress = Progress(case.id, len(screened.dataset))
        for names, batch, reference in res.metric_batches(screened.dataset, case.metric):
            sync_device(res.device)
            start = time.perf_counter()
            adversarial = {}
            for label, run in attacks.items():
                adv = res.run_batched(case.metric, lambda x, a=run: a(metric, x), batch, reference)
                # the session's attacks made their perturbations for their own budgets: scaled onto the ball
                adversarial[label] = adv if label == PGD_LABEL else batch + project_l2(adv - batch, attack.eps)
            for i, name in enumerate(names):
                try:
                    row = self._image_row(case, attack, ranks, batch, reference, adversarial, i)
                except ValueError as exc:  # the metric gave a non-finite score to a noisy copy
                    if not self.config.skip_bad_images:
                        raise
                    out.rows.append(skipped_row(name, dataset_slug(case.dataset), f"not certified: {exc}"))
                    continue
                row = {"image_name": name, "test_dataset": dataset_slug(case.dataset), **row}
                out.rows.append({**row, BASE_CLEAR: screened.clean[name]})
                for adv in adversarial.values():
                    out.max_linf = max(out.max_linf, float((adv[i] - batch[i]).abs().max()))
                    out.max_l2 = max(out.max_l2 or 0.0, float((adv[i] - batch[i]).norm()))
            sync_device(res.device)
            out.seconds += time.perf_counter() - start
            progress.advance(len(names))
        out.frames = len(scored_rows(out.rows))
        for name in sorted(screened.skipped):
            out.rows.append(
                skipped_row(
                    name, dataset_slug(case.dataset), screened.skipped[name], clear=screened.clean.get(name, math.nan)
                )
            )
        return out

    def _image_row(
        self,
        case: CaseSpec,
        spec: Certify,
        ranks: Ranks,
        batch: torch.Tensor,
        reference: torch.Tensor | None,
        adversarial: dict[str, torch.Tensor],
        i: int,
    ) -> dict[str, Any]:
        """Image ``i`` of the batch: its certificate, the smoothed score after each attack, a fresh clean estimate.

        Raises:
            ValueError: the metric gave a noisy copy a non-finite score.
        """
        x, ref = batch[i : i + 1], None if reference is None else reference[i : i + 1]
        began = time.perf_counter()
        certificate = certify_samples(self.samples(case.metric, x, ref, spec), ranks)
        seconds = time.perf_counter() - began
        smoothed = {
            label: smoothed_median(self.samples(case.metric, adv[i : i + 1], ref, spec))
            for label, adv in adversarial.items()
        }
        row = certificate_row(certificate, smoothed, smoothed_median(self.samples(case.metric, x, ref, spec)))
        row.update(self._distortion(x, adversarial, row[ACHIEVED_BY], i))
        row[CERTIFICATE_SECONDS] = seconds
        return row

    def attacks(self, case: CaseSpec, spec: Certify) -> dict[str, Callable[..., torch.Tensor]]:
        """Label -> attack object: the session's image attacks (``projected``) and the spec's own PGD.

        An attack that cannot run on the metric (a gradient attack on a non-differentiable one) is left
        out; :func:`certify_params` names it.
        """
        metric = self.resources.metric(case.metric)
        out: dict[str, Callable[..., torch.Tensor]] = {}
        if spec.projected:
            for companion in case.companions:
                attack = at_query_limit(companion.create(), self.config, self.resources.device)
                if attack.needs_gradient and not metric.spec.differentiable:
                    continue
                out[companion.label] = attack
        if spec.iters > 0 and spec.eps > 0 and metric.spec.differentiable:
            out[PGD_LABEL] = spec
        return out

    def samples(self, metric_name: str, image: torch.Tensor, reference: torch.Tensor | None, spec: Certify) -> Any:
        """The metric's raw scores of ``spec.n`` noisy copies of one image (1, 3, H, W), as a numpy array."""
        res = self.resources
        metric = res.metric(metric_name)
        chunk = SAMPLE_BATCHES * self.config.resolved_batch_size(res.device)
        scores = []
        with torch.no_grad():
            for start in range(0, spec.n or 0, chunk):
                k = min(chunk, (spec.n or 0) - start)
                noisy = spec.noisy(image.expand(k, -1, -1, -1))
                refs = None if reference is None else reference.expand(k, -1, -1, -1)
                scores.append(res.run_batched(metric_name, metric, noisy, refs).float().cpu())
        return torch.cat(scores).numpy().astype(np.float64)

    @staticmethod
    def _distortion(x: torch.Tensor, adversarial: dict[str, torch.Tensor], worst: str, i: int) -> dict[str, float]:
        """PSNR, SSIM, MSE and L2 norm of the change the attack that moved the smoothed score most made."""
        if not worst:
            return {"psnr": math.nan, "ssim": math.nan, "mse": math.nan, ACHIEVED_L2: math.nan}
        adv = adversarial[worst][i : i + 1]
        sim = image_distortion(x, adv)
        return {
            "psnr": float(sim["psnr"][0]),
            "ssim": float(sim["ssim"][0]),
            "mse": float(sim["mse"][0]),
            ACHIEVED_L2: float((adv - x).norm()),
        }


def certify_params(case: CaseSpec, spec: Certify, metric: Any, samples_rule: str) -> dict[str, Any]:
    """What a certify case records beyond the spec's fields: the ranks, the attacks measured and those left out."""
    ranks = certificate_ranks(spec.n or 0, spec.sigma, spec.eps, spec.alpha)
    measured, left_out = [], []
    for companion in case.companions if spec.projected else ():
        if companion.cls.needs_gradient and not metric.spec.differentiable:
            left_out.append(f"{companion.label}: needs gradients, {case.metric} has none")
        else:
            measured.append(f"{companion.label} (projected)")
    if spec.iters > 0 and spec.eps > 0:
        if metric.spec.differentiable:
            measured.append(PGD_LABEL)
        else:
            left_out.append(f"{PGD_LABEL}: needs gradients, {case.metric} has none")
    return {
        "n_rule": samples_rule,
        "rank_lower": ranks.lower,
        "rank_upper": ranks.upper,
        "p_upper": ranks.p_upper,
        "step_length": spec.step_length,
        "attacks_measured": ",".join(measured),
        "attacks_left_out": "; ".join(left_out),
    }


def resolve_samples(spec: Certify, config: SuiteConfig, device: torch.device) -> tuple[Certify, str]:
    """The spec with its samples per image resolved for ``device`` (:meth:`SuiteConfig.certify_samples`), and why."""
    n, rule = config.certify_samples(spec.n, device, GPU_SAMPLES)
    return dataclasses.replace(spec, n=n), rule
