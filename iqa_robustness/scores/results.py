"""The result of one test case (metric x attack x dataset [x train set x amplitude]).

A :class:`CaseResult` is what a grid test produces and what every back end consumes: the
per-image rows in the MSU CSV layout, the group scores, timings and artefact paths. It is
plain data and round-trips through JSON, so pytest-xdist workers can hand results to the
controller process, which alone writes the MLflow store.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from iqa_robustness.scores.rows import scored_rows, skipped_rows

#: The curve of a query-based case: the mean over images of the best q found against queries made.
BEST_Q_CURVE = "best_q"


@dataclasses.dataclass
class CaseResult:
    """One grid case.

    Attributes:
        case_id: pytest-style id, e.g. ``ifgsm-cnniqa-live-msu5``.
        metric, attack, dataset: names as the registries and data loader know them.
        params: every hyperparameter of the attack plus seed, batch size, device.
        rows: per-image dicts with the MSU columns ``image_name, test_dataset, clear, attacked,
            rel_gain, psnr, ssim, mse`` (+ ``train_dataset, amplitude`` for universal attacks); an
            input that was not scored is a row with ``nan`` measurements and a non-empty
            ``skip_reason`` (see :mod:`iqa_robustness.scores.rows`).
        scores: group scores of the scored rows (``abs_gain``, ``robustness_score``, ... and ``*_ci_low/high``).
        lower_better: orientation of ``clear``/``attacked`` (raw metric values).
        weights_mode: ``pretrained`` or ``random`` (random results are never benchmark numbers).
        seconds_per_image: attack time per image (excluding clean/attacked scoring).
        peak_memory_mb: peak accelerator (or process) memory during the case.
        amplitude, train_dataset: for universal attacks.
        budget: the L-inf budget of ``--eps`` the case ran at (``attack`` then ends in its slug,
            ``ifgsm-eps4``); ``None`` without one.
        artifacts: name -> path of files to keep (perturbation .npy/.png, image pairs, plots).
        status: ``passed``, ``failed`` (an invariant or a baseline threshold), ``error`` (the case
            raised: no rows, ``message`` says why), ``interrupted`` (the session was stopped while
            it ran) or ``skipped``; message: why, when not passed.
        fingerprint: what identifies the computation (see :mod:`iqa_robustness.runner.fingerprint`);
            ``--resume`` reuses a result with the same one.
        resumed_from: the session whose result this is, when it was reused by ``--resume``.
        curves: named series ``[[step, value], ...]`` (``train_loss`` of a universal attack).
        transfer: ``--transfer-to``: target metric -> its scores of the case's adversarial images
            (:data:`~iqa_robustness.scores.transfer.TRANSFER_KEYS` and the target's ``lower_better``,
            which ``merge`` rescores image shards with), or ``{"error": why}`` for a
            target that could not score them; the per-image values are the rows' ``clear@<target>``
            and ``attacked@<target>``.
        probes: the evidence of the evaluation checks measured on the case's metric and data set
            (``check_*`` of :mod:`iqa_robustness.scores.checks`: its loss gradient, a second scoring, and the
            seconds each took; docs/verdict.md); empty where no probe ran.
        curves: named series ``[[step, value], ...]`` (``train_loss`` of a universal attack; ``best_q``
            of a query-based attack: the mean best oriented score against queries per image). A query-based
            case also has ``queries_used`` (mean over images) and ``queries_used_max`` in ``scores``.
    """

    case_id: str
    metric: str
    attack: str
    dataset: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    lower_better: bool = False
    weights_mode: str = "pretrained"
    seconds_per_image: float = float("nan")
    peak_memory_mb: float = float("nan")
    amplitude: float | None = None
    train_dataset: str | None = None
    budget: float | None = None
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    status: str = "passed"
    message: str = ""
    fingerprint: str = ""
    resumed_from: str = ""
    curves: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    transfer: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    probes: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def scored_rows(self) -> list[dict[str, Any]]:
        """The rows the scores are computed on (no ``skip_reason``)."""
        return scored_rows(self.rows)  # type: ignore[return-value]

    @property
    def skipped_rows(self) -> list[dict[str, Any]]:
        """The inputs left out, each with its ``skip_reason``."""
        return skipped_rows(self.rows)  # type: ignore[return-value]

    @property
    def n_images(self) -> int:
        """Images (or clips) scored."""
        return len(self.scored_rows)

    @property
    def n_skipped(self) -> int:
        """Images (or clips) skipped, with their reasons in :attr:`skipped_rows`."""
        return len(self.skipped_rows)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=float))
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> CaseResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def interrupted_message(reason: str) -> str:
    """The message of a case the session was stopped in."""
    return f"interrupted ({reason or 'KeyboardInterrupt'}) while the case ran; --resume runs it again"


def unfinished_result(case_id: str, fields: dict[str, Any], status: str, message: str) -> CaseResult:
    """The record of a case that produced no rows: it raised (``error``) or was stopped (``interrupted``).

    Args:
        fields: the case's identity: ``metric``, ``attack``, ``dataset``, ``params`` and, for a
            universal case, ``amplitude`` and ``train_dataset``; ``budget`` for a case at an L-inf budget.
    """
    return CaseResult(
        case_id=case_id,
        metric=str(fields.get("metric", "")),
        attack=str(fields.get("attack", "")),
        dataset=str(fields.get("dataset", "")),
        params=dict(fields.get("params", {})),
        amplitude=fields.get("amplitude"),
        train_dataset=fields.get("train_dataset"),
        budget=fields.get("budget"),
        status=status,
        message=message[:2000],
    )
