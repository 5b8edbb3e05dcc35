"""Transferability: the adversarial images made against a source metric, scored by other (target) metrics.

docs/methodology.md, "Transferability": per source x target, the normalised absolute gain and the robustness
score R on the target, each with the target's own min-max scaling fitted on its clean scores of the
same inputs (:func:`~iqa_robustness.scores.formulas.score_group`), with 95% Student-t intervals.
A published perturbation (the benchmark's MANIQA ``.npy`` files, the CVIU paper's PNGs) is a
source without a model: its row of the matrix is labelled by its file. Zhang et al. (NeurIPS
2022) and Ran et al. (2024) report that perturbations made against IQA metrics transfer poorly;
the matrix measures it per metric pair.

A case's per-image target scores live in its rows as ``clear@<target>`` and ``attacked@<target>``
(raw target values; the MSU per-image CSV ignores them); its group scores on each target in
:attr:`CaseResult.transfer <iqa_robustness.scores.results.CaseResult.transfer>` and, in MLflow, as
the case metrics ``transfer/<target>/<score>``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqa_robustness.conventions import dataset_slug
from iqa_robustness.scores.formulas import score_group
from iqa_robustness.scores.rows import scored_rows

#: the scores a target gets, each with its interval
TRANSFER_SCORES: tuple[str, ...] = ("norm_abs_gain", "robustness_score")
#: every key of a target's scores
TRANSFER_KEYS: tuple[str, ...] = (
    "n",
    *(key for score in TRANSFER_SCORES for key in (score, f"{score}_ci_low", f"{score}_ci_high")),
)
#: the MLflow case-metric prefix of a target's scores: ``transfer/<target>/<score>``
METRIC_PREFIX = "transfer/"
#: the session's transfer files, in its results folder
TRANSFER_FILE = "transfer.csv"
TRANSFER_PER_IMAGE_FILE = "transfer_per_image.csv"
#: file endings of a published perturbation given as a universal case's train set (``--uap-file``)
PUBLISHED_SUFFIXES = (".npy", ".png")


def clear_key(target: str) -> str:
    """The row key of the target's raw clean score."""
    return f"clear@{target}"


def attacked_key(target: str) -> str:
    """The row key of the target's raw score of the adversarial image."""
    return f"attacked@{target}"


def target_scores(clear: Sequence[float], attacked: Sequence[float], lower_better: bool) -> dict[str, float]:
    """The scores of one target on a case's images (pairs with a non-finite value are left out).

    Args:
        clear: the target's raw scores of the source's clean inputs.
        attacked: the target's raw scores of the same inputs after the source's attack.
        lower_better: the target's orientation.

    Returns:
        :data:`TRANSFER_KEYS`: ``n`` (images scored), ``norm_abs_gain`` and ``robustness_score`` with
        the target's min-max scaling fitted on ``clear``, and their 95% intervals.

    Raises:
        ValueError: no image has both scores finite.
    """
    c = np.asarray(clear, dtype=np.float64)
    a = np.asarray(attacked, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(a)
    if not keep.any():
        raise ValueError("no image has both a finite clean and a finite attacked score on the target")
    scores = score_group(c[keep], a[keep], lower_better=lower_better)
    return {key: float(scores[key]) for key in TRANSFER_KEYS}


def score_transfer(rows: Iterable[Mapping[str, Any]], target: str, lower_better: bool) -> dict[str, float]:
    """:func:`target_scores` from a case's scored rows with ``clear@<target>`` / ``attacked@<target>``."""
    scored = [r for r in scored_rows(rows) if clear_key(target) in r]
    return target_scores(
        [float(r[clear_key(target)]) for r in scored],
        [float(r[attacked_key(target)]) for r in scored],
        lower_better,
    )


def join_transfer(
    parts: Sequence[Mapping[str, Mapping[str, Any]]], rows: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The target scores of a case joined from its image shards: each target rescored on the joined ``rows``.

    The target's min-max scaling is then fitted on the clean scores of all the case's images, as
    for the case's own scores. A target that failed in any shard keeps that error.

    Args:
        parts: each shard's ``CaseResult.transfer`` (entries carry the target's ``lower_better``).
        rows: the case's joined rows, with ``clear@<target>`` / ``attacked@<target>``.
    """
    out: dict[str, dict[str, Any]] = {}
    for target in dict.fromkeys(t for part in parts for t in part):
        entries = [part[target] for part in parts if target in part]
        errors = [str(e["error"]) for e in entries if e.get("error")]
        if errors or "lower_better" not in entries[0]:
            out[target] = {"error": "; ".join(dict.fromkeys(errors)) or f"{target}: no orientation recorded"}
            continue
        lower_better = bool(entries[0]["lower_better"])
        try:
            out[target] = {**score_transfer(rows, target, lower_better), "lower_better": lower_better}
        except ValueError as exc:
            out[target] = {"error": f"{target}: {exc}"}
    return out


def transfer_metrics(transfer: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """A case's target scores as flat metrics ``transfer/<target>/<score>`` (errors and non-numbers left out)."""
    out: dict[str, float] = {}
    for target, scores in transfer.items():
        for key in TRANSFER_KEYS:
            value = scores.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{METRIC_PREFIX}{target}/{key}"] = float(value)
    return out


def transfer_from_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The inverse of :func:`transfer_metrics`: ``{target: {score: value}}`` from flat metrics."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for name, value in metrics.items():
        if name.startswith(METRIC_PREFIX):
            target, _, key = name.removeprefix(METRIC_PREFIX).rpartition("/")
            if target and key:
                out[target][key] = float(value)
    return dict(out)


def is_published(train_dataset: str | None) -> bool:
    """Whether a universal case's train set is a published perturbation file (``--uap-file``)."""
    return bool(train_dataset) and Path(str(train_dataset)).suffix.lower() in PUBLISHED_SUFFIXES


def source_label(attack: str, metric: str, train_dataset: str | None) -> str:
    """The matrix row of a case: ``ifgsm · niqe``; a published perturbation by its file: ``uap · file.npy``."""
    if is_published(train_dataset):
        return f"{attack} · {Path(str(train_dataset)).name}"
    return f"{attack} · {metric}"


def case_transfer_rows(case: Mapping[str, Any], transfer: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per target of a case, the case's own metric first (its own scores, ``own = True``).

    Args:
        case: the case's identity and own scores: ``case_id, metric, attack, dataset, train_dataset,
            amplitude`` and at least :data:`TRANSFER_KEYS` (a summary row, or logged metrics).
        transfer: ``{target: scores}``; a target that failed has an ``error`` and no scores.

    Returns:
        Rows with ``case_id, source, attack, metric, dataset, train_dataset, amplitude, target, own``,
        the :data:`TRANSFER_KEYS` and ``error``; none when the case has no transfer targets.
    """
    if not transfer:
        return []
    identity = {
        "case_id": case["case_id"],
        "source": source_label(str(case["attack"]), str(case["metric"]), case.get("train_dataset")),
        "attack": case["attack"],
        "metric": case["metric"],
        "dataset": case["dataset"],
        "train_dataset": case.get("train_dataset") or "",
        "amplitude": "" if case.get("amplitude") in (None, "", "None") else case["amplitude"],
    }
    targets = {str(case["metric"]): {k: case.get(k, math.nan) for k in TRANSFER_KEYS}, **transfer}
    rows = []
    for target, scores in targets.items():
        row = {**identity, "target": target, "own": target == case["metric"]}
        row.update({k: _number(scores.get(k)) for k in TRANSFER_KEYS})
        row["error"] = str(scores.get("error", ""))
        rows.append(row)
    return rows


def amplitude_mean_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Universal sources averaged over their amplitudes per target (``amplitude = "mean"``), as the benchmark does."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["amplitude"] not in ("", "mean"):
            key = (row["metric"], row["attack"], row["dataset"], row["train_dataset"], row["target"])
            groups[key].append(row)
    out = []
    for members in groups.values():
        mean: dict[str, Any] = {**members[0], "case_id": f"{str(members[0]['case_id']).rsplit('-amp', 1)[0]}-ampmean"}
        mean["amplitude"] = "mean"
        for key in TRANSFER_KEYS:
            values = [float(m[key]) for m in members if math.isfinite(float(m[key]))]
            mean[key] = float(np.mean(values)) if values else math.nan
        mean["error"] = "; ".join(dict.fromkeys(str(m["error"]) for m in members if m["error"]))
        out.append(mean)
    return out


def per_image_rows(case_id: str, rows: Iterable[Mapping[str, Any]], targets: Iterable[str]) -> list[dict[str, Any]]:
    """Long per-image rows of one case: ``case_id, image_name, target, clear, attacked`` (raw target values)."""
    out = []
    for row in scored_rows(rows):
        for target in targets:
            if clear_key(target) in row:
                out.append(
                    {
                        "case_id": case_id,
                        "image_name": row["image_name"],
                        "test_dataset": row.get("test_dataset", ""),
                        "amplitude": "" if row.get("amplitude") is None else row["amplitude"],
                        "target": target,
                        "clear": row[clear_key(target)],
                        "attacked": row[attacked_key(target)],
                    }
                )
    return out


def transfer_matrix(rows: Sequence[Mapping[str, Any]], score: str = "norm_abs_gain") -> dict[str, Any]:
    """The source x target matrix of ``score`` from :func:`case_transfer_rows` (with :func:`amplitude_mean_rows`).

    Sources are the image-specific cases and the universal ones averaged over amplitudes; a source
    is named by :func:`source_label` (plus the test set when there are several). A published
    perturbation scored by several metrics is one source; its value on a target is the case's own
    score where the target is the scoring metric.

    Returns:
        ``{"sources": [...], "targets": [...], "values": [[...]], "own": [[bool]], "source_metric": [...]}``;
        ``own[i][j]`` marks the diagonal (the source's own metric, not for a published file),
        missing pairs are NaN.
    """
    kept = [r for r in rows if r["amplitude"] in ("", "mean")]
    several_sets = len({dataset_slug(str(r["dataset"])) for r in kept}) > 1
    sources: dict[str, str] = {}
    targets: list[str] = []
    cells: dict[tuple[str, str], tuple[bool, float]] = {}
    for row in kept:
        label = str(row["source"])
        if several_sets:
            label += f" · {dataset_slug(str(row['dataset']))}"
        published = is_published(str(row["train_dataset"]))
        sources.setdefault(label, "" if published else str(row["metric"]))
        target = str(row["target"])
        if target not in targets:
            targets.append(target)
        own = bool(row["own"])
        value = _number(row.get(score))
        previous = cells.get((label, target))
        if previous is None or (own and not previous[0]) or (not math.isfinite(previous[1]) and math.isfinite(value)):
            cells[(label, target)] = (own, value)
    names = list(sources)
    values = [[cells.get((s, t), (False, math.nan))[1] for t in targets] for s in names]
    own_cells = [[sources[s] == t for t in targets] for s in names]
    metrics = list(sources.values())
    return {"sources": names, "targets": targets, "values": values, "own": own_cells, "source_metric": metrics}


def matrix_rows(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The matrix as CSV rows: ``source, source_metric`` and one column per target."""
    return [
        {"source": s, "source_metric": m, **dict(zip(matrix["targets"], values, strict=True))}
        for s, m, values in zip(matrix["sources"], matrix["source_metric"], matrix["values"], strict=True)
    ]


def _number(value: object) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def session_transfer_rows(results: Iterable[Any]) -> list[dict[str, Any]]:
    """:func:`case_transfer_rows` of every case with targets, then the universal sources' amplitude means.

    Args:
        results: :class:`~iqa_robustness.scores.results.CaseResult` list (cases without ``transfer`` add nothing).
    """
    from iqa_robustness.scores.summary import case_summary

    rows: list[dict[str, Any]] = []
    for r in results:
        if r.transfer:
            rows += case_transfer_rows(case_summary(r), r.transfer)
    return rows + amplitude_mean_rows(rows)


def write_transfer(results: Sequence[Any], results_dir: Path) -> tuple[Path, Path] | None:
    """``transfer.csv`` (one row per case x target, :func:`session_transfer_rows`) and ``transfer_per_image.csv``.

    Returns:
        The two paths, or None when no case has transfer targets.
    """
    from iqa_robustness.scores.summary import write_summary

    rows = session_transfer_rows(results)
    if not rows:
        return None
    images = [row for r in results for row in per_image_rows(r.case_id, r.rows, r.transfer)]
    summary = write_summary(rows, Path(results_dir) / TRANSFER_FILE)
    per_image = write_summary(images, Path(results_dir) / TRANSFER_PER_IMAGE_FILE)
    return summary, per_image
