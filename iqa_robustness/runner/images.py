"""Image cases: the attack on the dataset's images in equal-size batches, one MSU row per image.

The benchmark's flow (Antsiferova et al., AAAI 2024): clean scores computed once per metric and
dataset without gradients and shared by every attack, the attack batch by batch, attacked scores,
and per-image PSNR / SSIM / MSE of the unclamped change (as the benchmark measures universal
perturbations). A full-reference metric's inputs are JPEG copies of the clean images, each scored
and attacked with its clean image bound as the reference: ``clear = S(x0, jpeg)``,
``attacked = S(x0, attack(jpeg))``, and PSNR / SSIM / MSE compare the JPEG with its attacked copy.
Images the metric cannot take (:meth:`Resources.screened
<iqa_robustness.runner.resources.Resources.screened>`) follow as skipped rows with their reasons.
With ``--transfer-to``, the other metrics score the same adversarial batches
(:class:`~iqa_robustness.runner.transfer.TransferScorer`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.budget import active_budgets, changed_pixels
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.attacks.queries import QueryRecord, recording_queries
from iqa_robustness.conventions import dataset_slug, orient
from iqa_robustness.defences import DefendedMetric, ImageDraws
from iqa_robustness.progress import Progress
from iqa_robustness.runner.cases import Outcome
from iqa_robustness.runner.config import SuiteConfig, sync_device
from iqa_robustness.runner.grid import CaseSpec
from iqa_robustness.runner.resources import Resources
from iqa_robustness.runner.transfer import TransferScorer
from iqa_robustness.scores.defences import DEFENCE_SECONDS, DRAW_PREFIX, UNDEFENDED_ATTACKED, UNDEFENDED_CLEAR
from iqa_robustness.scores.formulas import image_distortion
from iqa_robustness.scores.rows import skipped_row
from iqa_robustness.scores.transfer import attacked_key, clear_key


class ImageCaseRunner:
    """Image-specific and universal attacks on an image dataset (or on a video set's frames)."""

    def __init__(self, resources: Resources, config: SuiteConfig) -> None:
        self.resources = resources
        self.config = config

    def run(self, case: CaseSpec, attack: Attack, perturbation: Perturbation | None) -> Outcome:
        res = self.resources
        metric = res.metric(case.metric)
        victim = res.metric(case.victim)  # the undefended metric in a defence's non-adaptive evaluation
        defended = metric if isinstance(metric, DefendedMetric) else None
        screened = res.screened(case.metric, case.dataset)
        clean = screened.clean
        mos = res.mos(screened.dataset)
        out = Outcome()
        progress = Progress(case.id, len(screened.dataset))
        user_targets = tuple(self.config.transfer_to or ())
        targets = list(user_targets)
        if defended is not None:  # the undefended metric's scores of the clean and attacked images: c and a
            targets.append(case.base_metric)
        transfer = TransferScorer(res, case.metric, case.dataset, targets)
        l0_bounded = any(b.norm == "l0" for b in active_budgets(attack))
        for names, batch, reference in res.metric_batches(screened.dataset, case.metric):
            sync_device(res.device)
            start = time.perf_counter()
            records: list[QueryRecord] = []
            if perturbation is not None:
                adv = attack.apply(perturbation, batch, case.amplitude, clamp=self.config.clamp_uap)
            else:
                with recording_queries() as query_log:  # a random defence draws afresh for the attack
                    attacking = res.image_draws(names, attack=True)
                    adv = res.run_batched(case.victim, lambda x: attack(victim, x), batch, reference, attacking)
                records = query_log.records[-len(names) :]  # a retried (out-of-memory) call logs again
            sync_device(res.device)
            out.seconds += time.perf_counter() - start
            scoring = res.image_draws(names)  # a random defence: each image the draw its clean copy had
            with torch.no_grad():
                attacked = res.run_batched(case.metric, metric, adv, reference, scoring).float().cpu().tolist()
            out.max_linf = max(out.max_linf, float((adv - batch).abs().max()))
            on_targets = transfer.score_batch(screened.dataset, names, adv)
            if l0_bounded:
                out.max_l0 = max(out.max_l0 or 0.0, float(changed_pixels(batch, adv).max()))
            out.queries.extend(records)
            sim = image_distortion(batch, adv)
            defence = self._defence_columns(defended, batch, adv, scoring) if defended is not None else {}
            for i, name in enumerate(names):
                c, a = clean[name], attacked[i]
                row = {
                    "image_name": name,
                    "test_dataset": dataset_slug(case.dataset),
                    "clear": c,
                    "attacked": a,
                    "rel_gain": a / c if c != 0 else math.nan,
                    "psnr": sim["psnr"][i],
                    "ssim": sim["ssim"][i],
                    "mse": sim["mse"][i],
                }
                if attack.universal:
                    row["train_dataset"] = dataset_slug(case.train_dataset or "")
                    row["amplitude"] = case.amplitude
                if records:
                    row["queries_used"] = records[i].used
                if mos is not None:
                    row["mos"] = mos[0].get(name, math.nan)
                transfer.annotate(row, name, i, on_targets)
                if defended is not None:  # the undefended metric's c and a, under the names the MSU CSV keeps
                    take = row.get if case.base_metric in user_targets else row.pop  # no copy unless asked for
                    row[UNDEFENDED_CLEAR] = take(clear_key(case.base_metric))
                    row[UNDEFENDED_ATTACKED] = take(attacked_key(case.base_metric))
                    row.update({k: v[i] for k, v in defence.items()})
                out.rows.append(row)
                out.keep_pair(self.config.pairs_to_save, name, batch[i], adv[i], orient(a - c, metric.lower_better))
            progress.advance(len(names))
        out.frames = len(out.rows)
        out.transfer = transfer.results(out.rows, user_targets)  # the defence's own target is no transfer
        universal = {"train_dataset": dataset_slug(case.train_dataset or ""), "amplitude": case.amplitude}
        for name in sorted(screened.skipped):
            out.rows.append(
                skipped_row(
                    name,
                    dataset_slug(case.dataset),
                    screened.skipped[name],
                    clear=screened.clean.get(name, math.nan),
                    **(universal if attack.universal else {}),
                )
            )
        return out

    @staticmethod
    def _defence_columns(
        metric: DefendedMetric, batch: torch.Tensor, adv: torch.Tensor, draws: ImageDraws
    ) -> dict[str, list[Any]]:
        """Per image: how close ``d(x_adv)`` and ``d(x)`` stay to ``x`` (PSNR, SSIM), the defence's time and,
        for a random defence, the image's draw (``draw_angle``, ``draw_top``, ...: the one both were scored with).

        A defence that changes the size (resize, crop) is compared after bilinear resizing of its output
        to the input's size (ours: the source compares images of one size).
        """
        with draws.bound():
            start = time.perf_counter()
            defended_clean = metric.defended_images(batch)
            seconds = (time.perf_counter() - start) / max(batch.shape[0], 1)
            defended_adv = metric.defended_images(adv)
            drawn = metric.scoring_draws(batch)
        fit = [_same_size(defended_adv, batch), _same_size(defended_clean, batch)]
        attacked, clear = image_distortion(batch, fit[0].clamp(0, 1)), image_distortion(batch, fit[1].clamp(0, 1))
        columns: dict[str, list[Any]] = {
            "defended_psnr": list(attacked["psnr"]),
            "defended_ssim": list(attacked["ssim"]),
            "clear_defended_psnr": list(clear["psnr"]),
            "clear_defended_ssim": list(clear["ssim"]),
            DEFENCE_SECONDS: [seconds] * batch.shape[0],
        }
        for key in dict.fromkeys(k for draw in drawn for k in draw):
            columns[DRAW_PREFIX + key] = [draw.get(key, math.nan) for draw in drawn]
        return columns


def _same_size(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if images.shape[-2:] == like.shape[-2:]:
        return images
    return torch.nn.functional.interpolate(images, size=like.shape[-2:], mode="bilinear", align_corners=False)
