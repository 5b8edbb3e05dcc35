"""Run one grid case: metric x attack x dataset [x train set x amplitude] -> :class:`CaseResult`.

The :class:`Suite` is what the pytest plugin keeps for a session. It composes the session's
:class:`~iqa_robustness.runner.resources.Resources` (models, datasets, clean scores, trained
perturbations), one :class:`~iqa_robustness.runner.cases.CaseRunner` per kind of input (image
batches, whole clips for a video metric on a video set, or certificates for a certify case), and the
:class:`~iqa_robustness.runner.artefacts.ArtefactWriter`; from a runner's rows it computes the
group scores of docs/methodology.md (on the scored rows; skipped inputs keep their rows and reasons)
and assembles the case's result with its parameters.
"""

from __future__ import annotations

import glob
import logging
from typing import Any

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.budget import active_budgets
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.attacks.queries import mean_curve
from iqa_robustness.attacks.query_batch import describe_batches
from iqa_robustness.data.video_sets import VideoDataset
from iqa_robustness.defences import DefendedMetric
from iqa_robustness.metrics import metric_identity
from iqa_robustness.metrics.draws import MeanOfDraws
from iqa_robustness.runner.artefacts import ArtefactWriter
from iqa_robustness.runner.cases import CaseRunner, Outcome
from iqa_robustness.runner.certify import CertifyCaseRunner, certify_params, resolve_samples
from iqa_robustness.runner.clips import ClipCaseRunner
from iqa_robustness.runner.config import SuiteConfig, at_query_limit, device_name, peak_memory_mb, stable_seed
from iqa_robustness.runner.fingerprint import case_fingerprint, dataset_identity, file_digest
from iqa_robustness.runner.grid import CERTIFY, NON_ADAPTIVE, CaseSpec
from iqa_robustness.runner.images import ImageCaseRunner
from iqa_robustness.runner.probes import MetricProbes
from iqa_robustness.runner.resources import Resources
from iqa_robustness.scores.certificate import certified_case_scores
from iqa_robustness.scores.checks import scores_are_draws
from iqa_robustness.scores.defences import defence_scores
from iqa_robustness.scores.results import BEST_Q_CURVE, CaseResult
from iqa_robustness.scores.rows import nothing_to_score, score_rows, scored_rows

log = logging.getLogger(__name__)


class Suite:
    """Session state and the case loop: resources, a runner per input kind, the artefact writer."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.resources = Resources(config)
        self.images: CaseRunner = ImageCaseRunner(self.resources, config)
        self.clips: CaseRunner = ClipCaseRunner(self.resources, config)
        self.certify: CaseRunner = CertifyCaseRunner(self.resources, config)
        self.artefacts = ArtefactWriter(config.results_dir)
        self.probes = MetricProbes(self.resources)
        self._identities: dict[tuple[str, ...], str] = {}  # metric / dataset content digests, for fingerprints

    # -- what the plugin and the tests look at --------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.resources.device

    @property
    def batch_size(self) -> int:
        return self.resources.batch_size

    def dataset(self, name: str, metric: str) -> Any:
        return self.resources.dataset(name, metric)

    def run_batched(self, metric_name: str, fn: Any, batch: torch.Tensor) -> torch.Tensor:
        return self.resources.run_batched(metric_name, fn, batch)

    # -- one case -------------------------------------------------------------------------
    def run(self, case: CaseSpec, attack_kwargs: dict[str, Any] | None = None) -> CaseResult:
        """Run one case; with ``resume``, the earlier result of the same computation when there is one."""
        attack = self.attack(case, attack_kwargs)
        metric = self.resources.metric(case.metric)
        attack.check_metric(self.resources.metric(case.victim))
        fingerprint = self.fingerprint(case, attack)
        if self.config.resume:
            previous = self.previous_result(case.id, fingerprint)
            if previous is not None:
                return previous
        metric = self._with_draws(case, metric)
        dataset = self.resources.dataset(case.dataset, case.metric)
        seed = stable_seed(self.config.seed, self._seed_id(case))
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        perturbation = None
        if attack.universal:
            if case.train_dataset is None or case.amplitude is None:
                raise ValueError(f"{case.id}: a universal attack needs a train dataset and an amplitude")
            perturbation = self.resources.perturbation(attack, case.victim, case.train_dataset)
        clips = isinstance(dataset, VideoDataset)
        runner = self.certify if case.kind == CERTIFY else self.clips if clips else self.images
        outcome = runner.run(case, attack, perturbation)
        if not scored_rows(outcome.rows):
            raise nothing_to_score(outcome.rows, case.id)
        scores = self._scores(outcome, metric, case, clips)  # first: a certify case's rows gain columns
        result = CaseResult(
            case_id=case.id,
            metric=case.metric,
            attack=case.attack,
            dataset=case.dataset,
            params=self._params(case, attack, perturbation, seed, outcome, clips),
            rows=outcome.rows,
            scores=scores,
            lower_better=metric.lower_better,
            weights_mode=metric.weights_mode,
            seconds_per_image=outcome.seconds / max(outcome.frames, 1),  # per frame on clips
            peak_memory_mb=peak_memory_mb(self.device),
            amplitude=case.amplitude,
            train_dataset=case.train_dataset,
            budget=case.budget,
        )
        result.probes = self.probes.evidence(case.metric, case.dataset)  # docs/verdict.md
        result.fingerprint = fingerprint
        result.transfer = outcome.transfer or self._untransferred(case, clips)
        if perturbation is not None and perturbation.meta.get("loss_curve"):
            result.curves["train_loss"] = perturbation.meta["loss_curve"]
        self._record_queries(result, outcome, perturbation)
        label = f"{case.attack}_{case.metric}"
        result.artifacts.update(self.artefacts.write(case.id, outcome.pairs, perturbation, label))
        return result

    def _with_draws(self, case: CaseSpec, metric: Any) -> Any:
        """With ``--eot N``, a metric whose scores are draws (its random-metric probe) is attacked on the mean of N."""
        if not self.config.eot or isinstance(metric, DefendedMetric) or case.victim != case.metric:
            return metric
        if not scores_are_draws(self.probes.evidence(case.metric, case.dataset)):
            return metric
        return self.resources.average_draws(case.metric, self.config.eot)

    def train(self, case: CaseSpec) -> Perturbation:
        """Train (or load from the cache) a universal case's perturbation, and nothing else (``--train-only``)."""
        attack = self.attack(case)
        if not attack.universal or case.train_dataset is None:
            raise ValueError(f"{case.id} is not a universal case: there is nothing to train")
        metric = self.resources.metric(case.victim)
        attack.check_metric(metric)
        return self.resources.perturbation(attack, case.victim, case.train_dataset)

    def attack(self, case: CaseSpec, attack_kwargs: dict[str, Any] | None = None) -> Attack:
        """The case's attack object; a query-based one at the session's query budget (``--queries``).

        A ``queries`` given in the attack spec or ``attack_kwargs`` is the attack's own budget, which
        ``--queries auto`` keeps on CUDA and caps on the CPU (:meth:`SuiteConfig.query_limit`). A
        query-based universal attack's training images per query are capped on the CPU the same way
        (:meth:`SuiteConfig.query_images`); a certify spec gets its samples per image for the device
        (:meth:`SuiteConfig.certify_samples`).
        """
        attack = at_query_limit(case.run_spec.create(**(attack_kwargs or {})), self.config, self.device)
        if case.kind == CERTIFY:
            attack, _ = resolve_samples(attack, self.config, self.device)  # type: ignore[arg-type]
        return attack

    # -- resuming -------------------------------------------------------------------------
    def _metric_identity(self, name: str) -> str:
        """:func:`~iqa_robustness.metrics.metric_identity` of the metric, computed once per session."""
        key = ("metric", name)
        if key not in self._identities:
            self._identities[key] = metric_identity(self.resources.metric(name))
        return self._identities[key]

    def fingerprint(self, case: CaseSpec, attack: Attack) -> str:
        """The case's fingerprint (:mod:`~iqa_robustness.runner.fingerprint`): same value, same numbers."""
        data_key = ("dataset", case.dataset, case.metric)
        if data_key not in self._identities:
            self._identities[data_key] = dataset_identity(self.resources.dataset(case.dataset, case.metric))
        train = None
        if attack.universal:
            if self.config.uap_file:
                train = f"file:{file_digest(self.config.uap_file)}"
            elif case.train_dataset is not None:
                train_key = ("train", case.train_dataset)
                if train_key not in self._identities:
                    self._identities[train_key] = dataset_identity(self.resources.image_dataset(case.train_dataset))
                train = self._identities[train_key]
        c = self.config
        options = {
            "image_size": c.image_size,
            "max_images": c.max_images,
            "max_frames": c.max_frames,
            "seed": c.seed,
            "image_shard": list(c.image_shard) if c.image_shard else None,
            "amp": c.amp,
            "channels_last": c.channels_last,
            "on_bad_image": getattr(c, "on_bad_image", None),
        }
        mos = self.resources.mos(self.resources.dataset(case.dataset, case.metric))
        if mos is not None:  # subjective scores add scores: a result without them is not the same
            options["mos"] = file_digest(mos[1])
        if attack.iterations_attr == "queries":
            options.update(query_limit=c.query_limit(attack.iterations, self.device)[1])
            if attack.universal:
                options.update(query_images=c.query_images(attack.batch_size, self.device)[1])
        if attack.universal:
            options.update(clamp=c.clamp_uap, training_steps=list(c.uap_training_steps(self.device)))
        if c.eot:  # a random metric is attacked on the mean of this many draws
            options["eot"] = c.eot
        if c.transfer_to:  # a result without the target scores is not the same
            options["transfer_to"] = sorted(set(c.transfer_to) - {case.metric})
        if case.kind == CERTIFY:  # the attacks it measures, as they run on this device
            options["companions"] = [at_query_limit(s.create(), c, self.device).params() for s in case.companions]
        return case_fingerprint(
            metric=self._metric_identity(case.metric),
            attack=attack,
            dataset=self._identities[data_key],
            amplitude=case.amplitude,
            train_dataset=train,
            seed=stable_seed(c.seed, case.id),
            options=options,
        )

    def previous_result(self, case_id: str, fingerprint: str) -> CaseResult | None:
        """The newest result of ``case_id`` with this fingerprint in any session of the results folder.

        Only finished computations count (``passed`` or ``failed`` against a baseline); a case
        that raised or was interrupted runs again.
        """
        found = sorted(
            (self.config.results_dir / "cases").glob(f"*/{glob.escape(case_id)}.json"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for path in found:
            try:
                result = CaseResult.load_json(path)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("--resume: %s is unreadable (%s); not reused", path, exc)
                continue
            if result.fingerprint == fingerprint and result.status in ("passed", "failed"):
                log.info("%s: resumed from session %s", case_id, path.parent.name)
                result.resumed_from = result.resumed_from or path.parent.name
                return result
        return None

    def _untransferred(self, case: CaseSpec, clips: bool) -> dict[str, dict[str, Any]]:
        """The targets of a clip case: other metrics score adversarial images, not clips."""
        targets = [t for t in self.config.transfer_to or () if t != case.metric]
        if not clips or not targets:
            return {}
        why = (
            f"{case.metric} is attacked clip by clip on {case.dataset}; --transfer-to scores adversarial images "
            f"(test the video set's frames with an image metric as the source to measure transfer)"
        )
        return {t: {"error": why} for t in targets}

    @staticmethod
    def _record_queries(result: CaseResult, outcome: Outcome, perturbation: Perturbation | None) -> None:
        """A query-based case's queries per image (mean, max) and its mean best q against queries.

        An image-specific attack records every image's queries (:mod:`~iqa_robustness.attacks.queries`); a
        query-based universal perturbation made its queries in training (each a training-batch mean),
        so that count stands for every image it is applied to.
        """
        meta = perturbation.meta if perturbation is not None else {}
        if outcome.queries:
            used = [r.used for r in outcome.queries]
            curve = mean_curve(outcome.queries)
        elif "queries_used" in meta:
            used, curve = [int(meta["queries_used"])], meta.get("query_curve", [])
        else:
            return
        result.scores.update(queries_used=sum(used) / len(used), queries_used_max=float(max(used)))
        if curve:
            result.curves[BEST_Q_CURVE] = [[float(s), float(v)] for s, v in curve]

    @staticmethod
    def _seed_id(case: CaseSpec) -> str:
        """The id that seeds a case: a non-adaptive case makes the undefended case's adversarial images."""
        return case.undefended().id if case.defence_mode == NON_ADAPTIVE else case.id

    @staticmethod
    def _scores(outcome: Outcome, metric: Any, case: CaseSpec, clips: bool) -> dict[str, float]:
        if case.kind == CERTIFY:  # its own scores (docs/certify.md); the rows gain their scaled changes
            outcome.rows, scores = certified_case_scores(outcome.rows, metric.lower_better)
        else:
            scores = score_rows(outcome.rows, metric.lower_better, clips=clips)
        scores["max_linf"] = outcome.max_linf
        if outcome.max_l2 is not None:
            scores["max_l2"] = outcome.max_l2
        if outcome.max_l0 is not None:
            scores["max_l0"] = outcome.max_l0
        if isinstance(metric, DefendedMetric) and case.kind != CERTIFY:  # a certify case certifies it as it is
            scores.update(defence_scores(outcome.rows, metric.spec.range, metric.lower_better))
        return scores

    def _params(
        self,
        case: CaseSpec,
        attack: Attack,
        perturbation: Perturbation | None,
        seed: int,
        outcome: Outcome,
        clips: bool,
    ) -> dict[str, Any]:
        params = {
            "metric": case.metric,
            "dataset": case.dataset,
            "seed": seed,
            "batch_size": self.resources.effective_batch_size(case.metric),
            "device": str(self.device),
            "device_name": device_name(self.device),
            "image_size": self.config.image_size,
            "max_images": self.config.max_images,
            "amp": self.config.amp or "off",
            "channels_last": self.config.channels_last,
            "suite_grid": self.config.grid,  # quick: the main job's CPU grid (fewer images, queries, steps)
            **attack.params(),  # last: a universal attack's batch_size is its training batch, not the suite's
        }
        if self.resources.allocator is not None:  # the CPU's memory allocator (speed only, never a score)
            params["allocator"] = self.resources.allocator
        if case.budget is not None:
            params["budget"] = case.budget
        bound = linf_bound(attack, case)
        if bound is not None:
            params["linf_bound"] = bound
        metric = self.resources.metric(case.metric)
        # what the robustness card names the metric by (docs/card.md): its implementation's source and the
        # checksum of its parameter values as loaded, the one its fingerprint holds
        params.update(metric_source=metric.spec.source, metric_checksum=self._metric_identity(case.metric))
        if isinstance(metric, DefendedMetric):
            params.update(metric.defence.params(), base_metric=case.base_metric, defence_mode=case.defence_mode)
            if metric.defence.random:  # each image's draw comes from this seed and its name
                params.update(eot=metric.eot, draw_seed=self.config.seed)
        if case.kind == CERTIFY:
            _, rule = resolve_samples(case.run_spec.create(), self.config, self.device)  # type: ignore[arg-type]
            params.update(certify_params(case, attack, metric, rule))  # type: ignore[arg-type]
        if isinstance(metric, MeanOfDraws):
            params["eot"] = metric.draws
        if attack.iterations_attr == "queries":  # the spec's own budget, before --queries
            own = case.run_spec.create()
            params["query_limit"] = self.config.query_limit(own.iterations, self.device)[1]
            if not own.universal:  # the candidates a metric call scored, as the oracle measured it
                params["query_batch"] = describe_batches(self.resources.metric(case.victim))
            if own.universal:
                params["query_images"] = self.config.query_images(own.batch_size, self.device)[1]
        if self.config.image_shard is not None:
            params["image_shard"] = "{}/{}".format(*self.config.image_shard)
        if clips:
            params.update(max_frames=self.config.max_frames, frames=outcome.frames)
        if attack.universal:
            params.update(amplitude=case.amplitude, train_dataset=case.train_dataset, clamp=self.config.clamp_uap)
            meta = perturbation.meta if perturbation is not None else {}
            if "steps" in meta:  # trained here (a published file has no training record)
                params.update(train_steps=meta["steps"], full_epochs=meta.get("full_epochs", False))
        return params


def linf_bound(attack: Attack, case: CaseSpec) -> float | None:
    """The L-inf bound the case's adversarial images keep: the tightest of the attack's L-inf bounds and the
    case's ``--eps`` budget (both at the case's amplitude for a universal perturbation); ``None`` without one."""
    amplitude = abs(case.amplitude) if case.amplitude is not None else None
    bounds = [b.limit(attack, amplitude) for b in active_budgets(attack) if b.bounds_linf]
    if case.budget is not None:
        bounds.append(case.budget * (amplitude if amplitude is not None else 1.0))
    return min(bounds) if bounds else None
