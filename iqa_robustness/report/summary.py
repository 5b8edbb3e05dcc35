"""End of a session: per-image CSVs (MSU layout), the summary CSV, the console table, MLflow.

Runs in the pytest controller process only, from the per-case JSON files the workers wrote, so
results already computed survive a tracking server that is down.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from iqa_robustness.runner.case import CaseResult

log = logging.getLogger(__name__)

TABLE_COLUMNS = (
    ("abs_gain", "abs gain"),
    ("rel_gain", "rel gain"),
    ("norm_abs_gain", "norm gain"),
    ("robustness_score", "R"),
    ("wasserstein_score", "Wasserst."),
    ("energy_distance_score", "energy"),
    ("psnr", "PSNR"),
    ("seconds_per_image", "s/img"),
)


def load_cases(cases_dir: Path) -> list[CaseResult]:
    return [CaseResult.load_json(p) for p in sorted(Path(cases_dir).glob("*.json"))]


def case_summary(r: CaseResult) -> dict[str, object]:
    """One flat row: identity, scores, mean image similarity, timing."""
    row: dict[str, object] = {
        "case_id": r.case_id,
        "metric": r.metric,
        "attack": r.attack,
        "attack_spec": attack_spec_text(r),
        "dataset": r.dataset,
        "train_dataset": r.train_dataset or "",
        "amplitude": "" if r.amplitude is None else r.amplitude,
        "n": r.n_images,
        "weights_mode": r.weights_mode,
        "status": r.status,
        "message": r.message,
    }
    row.update(r.scores)
    for key in ("psnr", "ssim", "mse"):
        values = [float(x[key]) for x in r.rows if math.isfinite(float(x[key]))]
        row[key] = float(np.mean(values)) if values else math.nan
    row["seconds_per_image"] = r.seconds_per_image
    row["peak_memory_mb"] = r.peak_memory_mb
    return row


def attack_spec_text(r: CaseResult) -> str:
    """The attack exactly as run, in ``--attack`` syntax: ``ifgsm`` or ``ifgsm(eps=0.00784313725490196)``.

    Read from the case's params (the attack's hyperparameters); the case's attack label when they
    do not name a registered attack (results of an attack this installation does not have).
    """
    from iqa_robustness.attacks import AttackSpec

    try:
        return AttackSpec.from_params({"attack": r.attack, **r.params}).text
    except (KeyError, TypeError, ValueError):
        return r.attack


def amplitude_means(rows: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """Universal attacks averaged over their amplitudes, as the benchmark reports them."""
    groups: dict[tuple, list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        if row["amplitude"] != "":
            groups[(row["metric"], row["attack"], row["dataset"], row["train_dataset"])].append(row)
    out = []
    for members in groups.values():
        mean: dict[str, object] = {
            **members[0],
            "case_id": f"{members[0]['case_id'].rsplit('-amp', 1)[0]}-ampmean",
        }
        mean["amplitude"] = "mean"
        keys = dict.fromkeys(k for m in members for k, v in m.items() if isinstance(v, float) and k != "amplitude")
        for key in keys:
            # over the amplitudes that have the score (a case that raised has none)
            mean[key] = float(np.mean([float(m[key]) for m in members if isinstance(m.get(key), float)]))
        statuses = {m["status"] for m in members}
        mean["status"] = next((s for s in ("error", "failed") if s in statuses), "passed")
        out.append(mean)
    return out


def write_summary(rows: Sequence[dict[str, object]], path: Path) -> Path:
    """Rows as CSV, columns in order of first appearance; a row without a column leaves it empty."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_per_image(results: list[CaseResult], out_dir: Path) -> list[Path]:
    """One MSU-layout CSV per metric x attack: ``<attack>_<metric>_test.csv``."""
    from iqa_robustness.scores.msu_csv import write_msu_csv

    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        grouped[(r.attack, r.metric)].extend(r.rows)
    paths = []
    for (attack, metric), rows in sorted(grouped.items()):
        paths.append(write_msu_csv(out_dir / f"{attack}_{metric}_test.csv", rows))
    return paths


def format_table(rows: list[dict[str, object]]) -> list[str]:
    """Compact console table, one line per metric x attack x dataset (universal: amplitude mean)."""
    shown = [r for r in rows if r["amplitude"] in ("", "mean")]
    columns = TABLE_COLUMNS
    if any("flicker" in r for r in shown):  # video cases: the perturbation's frame-to-frame change
        columns = (*TABLE_COLUMNS, ("flicker", "flicker"))
    header = f"{'metric':<16} {'attack':<16} {'dataset':<10} {'n':>4} " + " ".join(
        f"{label:>9}" for _, label in columns
    )
    lines = [header, "-" * len(header)]
    for r in sorted(shown, key=lambda r: (str(r["metric"]), str(r["attack"]), str(r["dataset"]))):
        cells = " ".join(f"{_number(r.get(k)):>9.4g}" for k, _ in columns)
        flag = "  (random weights)" if r["weights_mode"] == "random" else ""
        flag += {"failed": "  FAILED", "error": "  ERROR"}.get(str(r["status"]), "")
        dataset = Path(str(r["dataset"])).name[:10]
        lines.append(f"{r['metric']!s:<16.16} {r['attack']!s:<16.16} {dataset:<10} {r['n']!s:>4} {cells}{flag}")
    return lines


def _number(value: object) -> float:
    """A table cell: numbers as they are; missing or empty (an image case's flicker) as nan."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def finish_session(
    cases_dir: Path,
    results_dir: Path,
    write: Callable[[str], None],
    mlflow_uri: str | None,
    experiment: str,
    project_root: Path,
) -> list[CaseResult]:
    """Write every output of a session; ``mlflow_uri`` None disables MLflow, "" means the default store."""
    results = load_cases(cases_dir)
    if not results:
        return results
    rows = [case_summary(r) for r in results]
    rows += amplitude_means(rows)
    summary = write_summary(rows, results_dir / "summary.csv")
    per_image = write_per_image(results, results_dir / "per_image")
    write("")
    write("iqa-robustness: gains > 0 mean the metric was fooled; higher R means more robust")
    for line in format_table(rows):
        write(line)
    write(f"summary: {summary}; per-image CSVs: {per_image[0].parent} ({len(per_image)} files)")
    if mlflow_uri is not None:
        from iqa_robustness.conventions import default_tracking_uri
        from iqa_robustness.tracking.store import TrackingError, log_session, session_tags

        uri = mlflow_uri or default_tracking_uri(project_root)
        modes = sorted({r.weights_mode for r in results})
        devices = sorted({str(r.params.get("device", "")) for r in results})
        try:
            run_id = log_session(
                results,
                uri=uri,
                experiment=experiment,
                tags=session_tags(device=",".join(devices), weights_mode=",".join(modes)),
                results_dir=results_dir,
            )
            write(f"MLflow: experiment {experiment!r}, parent run {run_id} at {uri}")
        except TrackingError as exc:  # the results on disk are complete either way
            write(f"MLflow logging to {uri} failed: {exc}; results are kept in {results_dir}")
    return results
