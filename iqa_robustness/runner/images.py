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

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.budget import active_budgets, changed_pixels
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.attacks.queries import QueryRecord, recording_queries
from iqa_robustness.conventions import dataset_slug, orient
from iqa_robustness.progress import Progress
from iqa_robustness.runner.cases import Outcome
from iqa_robustness.runner.config import SuiteConfig, sync_device
from iqa_robustness.runner.grid import CaseSpec
from iqa_robustness.runner.resources import Resources
from iqa_robustness.runner.transfer import TransferScorer
from iqa_robustness.scores.formulas import image_distortion
from iqa_robustness.scores.rows import skipped_row


class ImageCaseRunner:
    """Image-specific and universal attacks on an image dataset (or on a video set's frames)."""

    def __init__(self, resources: Resources, config: SuiteConfig) -> None:
        self.resources = resources
        self.config = config

    def run(self, case: CaseSpec, attack: Attack, perturbation: Perturbation | None) -> Outcome:
        res = self.resources
        metric = res.metric(case.metric)
        screened = res.screened(case.metric, case.dataset)
        clean = screened.clean
        mos = res.mos(screened.dataset)
        out = Outcome()
        progress = Progress(case.id, len(screened.dataset))
        transfer = TransferScorer(res, case.metric, case.dataset, self.config.transfer_to or ())
        l0_bounded = any(b.norm == "l0" for b in active_budgets(attack))
        for names, batch, reference in res.metric_batches(screened.dataset, case.metric):
            sync_device(res.device)
            start = time.perf_counter()
            records: list[QueryRecord] = []
            if perturbation is not None:
                adv = attack.apply(perturbation, batch, case.amplitude, clamp=self.config.clamp_uap)
            else:
                with recording_queries() as query_log:
                    adv = res.run_batched(case.metric, lambda x: attack(metric, x), batch, reference)
                records = query_log.records[-len(names) :]  # a retried (out-of-memory) call logs again
            sync_device(res.device)
            out.seconds += time.perf_counter() - start
            with torch.no_grad():
                attacked = res.run_batched(case.metric, metric, adv, reference).float().cpu().tolist()
            out.max_linf = max(out.max_linf, float((adv - batch).abs().max()))
            on_targets = transfer.score_batch(screened.dataset, names, adv)
            if l0_bounded:
                out.max_l0 = max(out.max_l0 or 0.0, float(changed_pixels(batch, adv).max()))
            out.queries.extend(records)
            sim = image_distortion(batch, adv)
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
                out.rows.append(row)
                out.keep_pair(self.config.pairs_to_save, name, batch[i], adv[i], orient(a - c, metric.lower_better))
            progress.advance(len(names))
        out.frames = len(out.rows)
        out.transfer = transfer.results(out.rows)
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
