"""What one case logs to MLflow: params (the attack's hyperparameters), metrics (every score), tags, a plot."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from iqa_robustness.conventions import orient
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.rows import skipped_text
from iqa_robustness.scores.summary import case_summary
from iqa_robustness.scores.transfer import transfer_metrics
from iqa_robustness.tracking.query import LoggedCase
from iqa_robustness.tracking.store import (
    KIND_CASE,
    PARAM_VALUE_LIMIT,
    TAG_KIND,
    TAG_VALUE_LIMIT,
    cut_text,
    finite_or_none,
    mlflow_key,
)

log = logging.getLogger(__name__)


# -- what one case logs ----------------------------------------------------------------------------


def case_params(result: CaseResult) -> dict[str, str]:
    """The attack's hyperparameters and the case identity, stringified and cut to MLflow's limits.

    ``attack`` is the case's attack label (``ifgsm-eps4``), ``attack_name`` the registered attack.
    """
    params: dict[str, Any] = dict(result.params)
    params.update(
        metric=result.metric,
        attack=result.attack,
        attack_name=result.params.get("attack", ""),
        dataset=result.dataset,
        amplitude=result.amplitude,
        train_dataset=result.train_dataset,
        seed=result.params.get("seed"),
    )
    return {mlflow_key(k): cut_text(v, PARAM_VALUE_LIMIT) for k, v in params.items()}


def case_metrics(result: CaseResult) -> dict[str, float]:
    """Every finite group score (with its CI bounds), mean PSNR/SSIM/MSE, time, memory, image counts.

    ``n_images`` counts the scored images, ``n_skipped`` those left out (named in the ``skipped`` tag).
    ``--transfer-to`` targets add ``transfer/<target>/<score>`` (a failed target's error is the
    ``transfer_errors`` tag); the evaluation checks' probes add their evidence (``check_*``, docs/verdict.md).

    ``psnr``, ``ssim`` and ``mse`` are means over the images; an image the attack left unchanged
    (PSNR = inf) does not enter the PSNR mean. Non-finite scores are left out (MLflow would store
    them as huge numbers); their absence reads as "undefined".
    """
    values: dict[str, Any] = dict(result.scores)
    try:
        summary = case_summary(result)
        values.update(psnr=summary["psnr"], ssim=summary["ssim"], mse=summary["mse"])
    except (KeyError, TypeError, ValueError) as exc:  # rows without similarity columns
        log.warning("case %s: no mean PSNR/SSIM/MSE (%s)", result.case_id, exc)
    values.update(
        seconds_per_image=result.seconds_per_image,
        peak_memory_mb=result.peak_memory_mb,
        n_images=result.n_images,
        n_skipped=result.n_skipped,
    )
    values.update(transfer_metrics(result.transfer))
    values.update(result.probes)  # the evaluation checks' evidence (docs/verdict.md)
    out = {}
    for name, value in values.items():
        number = finite_or_none(value)
        if number is not None:
            out[mlflow_key(name)] = number
    return out


def case_tags(result: CaseResult) -> dict[str, str]:
    tags = {
        TAG_KIND: KIND_CASE,
        "case_id": result.case_id,
        "status": result.status,
        "weights_mode": result.weights_mode,
        "lower_better": str(bool(result.lower_better)).lower(),
    }
    if result.message:
        tags["message"] = result.message
    if result.fingerprint:
        tags["fingerprint"] = result.fingerprint
    if result.resumed_from:
        tags["resumed_from"] = result.resumed_from
    if result.n_skipped:
        tags["skipped"] = skipped_text(result.rows, limit=TAG_VALUE_LIMIT)
    errors = [scores["error"] for scores in result.transfer.values() if scores.get("error")]
    if errors:
        tags["transfer_errors"] = "; ".join(errors)
    if result.weights_mode == "random":
        tags["benchmark_number"] = "false"
    return {mlflow_key(k): cut_text(v, TAG_VALUE_LIMIT) for k, v in tags.items()}


def plot_case(result: CaseResult, path: Path) -> Path | None:
    """Clear against attacked score per image, with the "unchanged" diagonal; None without rows."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    points = [(finite_or_none(r.get("clear")), finite_or_none(r.get("attacked"))) for r in result.scored_rows]
    points = [(c, a) for c, a in points if c is not None and a is not None]
    if not points:
        return None
    clear, attacked = zip(*points, strict=True)
    lo, hi = min(*clear, *attacked), max(*clear, *attacked)
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=0.8, label="unchanged")
    ax.scatter(clear, attacked, s=14, alpha=0.75, label="image")
    better = "lower" if result.lower_better else "higher"
    ax.set_xlabel(f"clear score ({better} is better)")
    ax.set_ylabel("attacked score")
    ax.set_title(result.case_id, fontsize=8)
    ax.legend(loc="best", fontsize=7)
    fig.subplots_adjust(left=0.16, bottom=0.12, right=0.97, top=0.93)  # fixed: tight_layout is slow
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def logged_case(result: CaseResult) -> LoggedCase:
    """A case of a results folder as the store would give it back (its rows already read)."""
    params = case_params(result)
    return LoggedCase(
        run_id="",
        case_id=result.case_id,
        metric=result.metric,
        attack=result.attack,
        dataset=result.dataset,
        train_dataset=result.train_dataset or "",
        amplitude=params.get("amplitude", "") if result.amplitude is not None else "",
        status=result.status,
        weights_mode=result.weights_mode,
        metrics=case_metrics(result),
        params=params,
        lower_better=bool(result.lower_better),
        message=result.message,
        rows=list(result.rows),
    )


def pair_caption(result: CaseResult, pair_name: str) -> list[str] | None:
    """Caption lines for a case's pair file ``pair_<stem>.png``: the image's scores; None without its row."""
    from iqa_robustness.pictures import pair_of_row

    row = next((r for r in result.scored_rows if pair_of_row(str(r["image_name"]), pair_name)), None)
    if row is None:
        return None
    clear, attacked = float(row["clear"]), float(row["attacked"])
    gain = orient(attacked - clear, result.lower_better)
    better = "lower" if result.lower_better else "higher"
    return [
        f"{result.metric} x {result.attack}: {pair_name.removeprefix('pair_').removesuffix('.png')}",
        f"clean {clear:.4g} -> attacked {attacked:.4g} (gain {gain:+.4g}; {better} is better)",
        f"PSNR {float(row.get('psnr', math.nan)):.2f} dB, SSIM {float(row.get('ssim', math.nan)):.4f}",
    ]


def captioned_pairs(result: CaseResult, folder: Path) -> list[Path]:
    """The case's pair images with their score captions (clean | adversarial | perturbation), written into ``folder``.

    A pair whose image has no scored row, or whose file cannot be read, is left out with a warning.
    """
    from iqa_robustness.pictures import captioned_pair

    out = []
    for name, path in result.artifacts.items():
        if not (name.startswith("pair_") and name.endswith(".png")):
            continue
        caption = pair_caption(result, name)
        if caption is None:
            log.warning("case %s: %s matches no scored image; logged without a caption", result.case_id, name)
            continue
        try:
            image = captioned_pair(path, caption)
        except (OSError, ValueError) as exc:
            log.warning("case %s: no captioned copy of %s (%s)", result.case_id, name, exc)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / name)
        out.append(folder / name)
    return out
