"""Combine the results folders of a grid's shards into one session (``iqa-robustness merge``).

Shards of the grid (``--shard K/N``) hold disjoint cases: their results are put together. Image
shards of a case (``--shard-images K/N``) hold disjoint images of the same case: their per-image
rows are joined and the group scores computed again on the union, since the benchmark's scores
(min-max scaling fitted on the group's clean scores, distribution distances) are not averages
of the shards' scores. Shards whose settings differ, a shard missing or present twice, and a
case in two grid shards are errors that name what differs.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.runner.sessions import LOCAL_SETTINGS, SessionRecord, latest_session
from iqa_robustness.scores.certificate import certified_case_scores, is_certified
from iqa_robustness.scores.checks import combine_evidence
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.rows import score_rows
from iqa_robustness.scores.summary import load_cases
from iqa_robustness.scores.transfer import join_transfer

_STATUS_ORDER = ("error", "interrupted", "failed", "skipped", "passed")


class MergeError(ValueError):
    """Results folders that are not shards of one grid; the message names the difference."""


@dataclasses.dataclass
class MergedSession:
    settings: dict[str, Any]
    results: list[CaseResult]
    sources: list[tuple[Path, SessionRecord]]


def merge_results(folders: Sequence[str | Path], out: str | Path | None = None) -> MergedSession:
    """The newest session of each folder, checked to be shards of one grid, combined case by case.

    With ``out``, the cases' files (image pairs, perturbations) are copied into ``out`` and the
    results point at the copies, so the merged folder stands on its own.
    """
    if not folders:
        raise MergeError("give the results folders of the shards to merge")
    sources = [(Path(f), latest_session(Path(f))) for f in folders]
    settings = _common_settings(sources)
    _check_shards(sources, "shard")
    pieces: dict[str, list[tuple[Path, CaseResult]]] = defaultdict(list)
    for folder, record in sources:
        for result in load_cases(record.cases_dir(folder)):
            if out is not None:
                result.artifacts = {k: relocate(v, folder, Path(out)) for k, v in result.artifacts.items()}
            pieces[result.case_id].append((folder, result))
    results = [_combine(case_id, found) for case_id, found in sorted(pieces.items())]
    return MergedSession(settings=settings, results=results, sources=sources)


def _common_settings(sources: list[tuple[Path, SessionRecord]]) -> dict[str, Any]:
    first_folder, first = sources[0]
    differing = []
    for folder, record in sources[1:]:
        keys = (set(first.settings) | set(record.settings)) - LOCAL_SETTINGS
        for key in sorted(keys):
            a, b = first.settings.get(key), record.settings.get(key)
            if a != b:
                differing.append(f"{key}: {a!r} in {first_folder}, {b!r} in {folder}")
    if differing:
        raise MergeError("the shards were run with different settings:\n  " + "\n  ".join(differing))
    return {k: v for k, v in first.settings.items() if k not in LOCAL_SETTINGS}


def _check_shards(sources: list[tuple[Path, SessionRecord]], field: str) -> None:
    """Every grid shard K/N present once, all of the same N (or no shards at all)."""
    values = [(folder, getattr(record, field)) for folder, record in sources]
    sharded = [(folder, v) for folder, v in values if v]
    if not sharded:
        return
    if len(sharded) != len(values):
        whole = [str(folder) for folder, v in values if not v]
        raise MergeError(f"{', '.join(whole)} ran the whole grid, the others one shard each: merge shards only")
    _check_parts([(str(folder), v) for folder, v in sharded], what="grid shard")


def _check_parts(parts: list[tuple[str, str]], what: str) -> None:
    totals = {v.split("/")[1] for _, v in parts}
    if len(totals) != 1:
        listed = ", ".join(f"{v} ({where})" for where, v in parts)
        raise MergeError(f"{what}s of different counts: {listed}")
    n = int(totals.pop())
    seen: dict[int, str] = {}
    for where, v in parts:
        k = int(v.split("/")[0])
        if k in seen:
            raise MergeError(f"{what} {k}/{n} twice: in {seen[k]} and {where}")
        seen[k] = where
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if missing:
        raise MergeError(f"{what}(s) {', '.join(missing)} missing; give the results of all {n}")


def _combine(case_id: str, found: list[tuple[Path, CaseResult]]) -> CaseResult:
    if len(found) == 1:
        return found[0][1]
    shards = [(str(folder), r.params.get("image_shard", "")) for folder, r in found]
    if not all(v for _, v in shards):
        where = ", ".join(str(folder) for folder, _ in found)
        raise MergeError(f"case {case_id} is in more than one shard ({where}); shards of a grid are disjoint")
    _check_parts(shards, what=f"image shard of {case_id}")
    return join_image_shards([r for _, r in found])


def join_image_shards(parts: Sequence[CaseResult]) -> CaseResult:
    """One case from its image shards: rows joined (by image name), group scores computed on the union."""
    first = parts[0]
    rows = sorted((row for part in parts for row in part.rows), key=lambda row: str(row.get("image_name", "")))
    names = [row.get("image_name") for row in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MergeError(f"case {first.case_id}: images in more than one image shard: {', '.join(duplicates[:5])}")
    clips = any("flicker" in row for row in rows)
    if is_certified(rows):  # a certify case: its own scores, scaled over the union
        rows, scores = certified_case_scores(rows, first.lower_better)
        scores["max_l2"] = max(float(p.scores.get("max_l2", math.nan)) for p in parts)
    else:
        scores = score_rows(rows, first.lower_better, clips=clips)
    scores["max_linf"] = max(float(p.scores.get("max_linf", math.nan)) for p in parts)
    frames = [max(p.n_images, 1) for p in parts]
    seconds = sum(p.seconds_per_image * f for p, f in zip(parts, frames, strict=True)) / sum(frames)
    params = {k: v for k, v in first.params.items() if k != "image_shard"}
    params["image_shards"] = len(parts)
    if "frames" in params:
        params["frames"] = sum(int(p.params.get("frames", 0)) for p in parts)
    status = min((p.status for p in parts), key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 0)
    artifacts: dict[str, str] = {}
    for part in parts:
        artifacts.update(part.artifacts)
    return dataclasses.replace(
        first,
        params=params,
        rows=rows,
        scores=scores,
        seconds_per_image=seconds,
        peak_memory_mb=max(p.peak_memory_mb for p in parts),
        artifacts=artifacts,
        transfer=join_transfer([p.transfer for p in parts], rows),
        probes=combine_evidence([p.probes for p in parts]),
        status=status,
        message="; ".join(dict.fromkeys(p.message for p in parts if p.message)),
        fingerprint="",
        resumed_from="",
    )


#: the folders of a results folder that hold a case's files
_FILE_FOLDERS = ("artifacts", "perturbations")


def relocate(path: str, folder: Path, out: Path) -> str:
    """A case file of the shard in ``folder`` copied to the same place under ``out``; its new path.

    Paths are recorded as the session saw them (often relative to where it ran); the part from
    ``artifacts/`` or ``perturbations/`` on is looked up in ``folder``. A file not found stays as
    recorded (MLflow logging then warns that it is missing).
    """
    parts = Path(path).parts
    marks = [i for i, part in enumerate(parts) if part in _FILE_FOLDERS]
    if not marks:
        return path
    tail = Path(*parts[marks[-1] :])
    source = folder / tail
    if not source.exists():
        return path
    target = out / tail
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return str(target)
