"""Robustness scores of one group of images: gains, robustness score, distribution distances.

The scores are those of the MSU Metrics Robustness Benchmark (Antsiferova et al., "Comparing the
robustness of modern no-reference image- and video-quality metrics to adversarial attacks",
AAAI 2024), computed as its published scoring code computes them (``score_methods.py``). For a
group of N images with clear scores c_i and attacked scores a_i, both oriented so that higher
means better quality, and s the min-max scaling fitted on the clear scores of the group only:

========================  ==========================================================
absolute gain (raw)       mean(a_i - c_i)
relative gain (raw)       mean((a_i - c_i) / (c_i + 1))
normalised absolute gain  mean(s(a_i) - s(c_i))
normalised relative gain  mean((s(a_i) - s(c_i)) / (s(c_i) + 1))
robustness score R        mean log10(max(1 - s(c_i), s(c_i)) / (|s(c_i) - s(a_i)| + 1e-6))
Wasserstein score         W1(s(c), s(a)) * sign(mean s(a) - mean s(c))
energy-distance score     E(s(c), s(a)) * sign(mean s(a) - mean s(c))
========================  ==========================================================

Large positive gains and distances mean the metric was fooled; higher R means more robust.
Every per-image mean comes with a 95% Student-t interval. R follows the benchmark's code; the
paper's text writes ``1 - f(x')`` in the numerator, which is -inf on real data.

The functions here take raw metric values: :func:`orient` turns them into quality (``-score``
for lower-is-better metrics). Metric objects orient through ``metrics.base.Metric.orient``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from iqa_robustness import conventions

#: Scores that are a mean over images and therefore get a confidence interval.
PER_IMAGE_SCORES: tuple[str, ...] = (
    "abs_gain",
    "rel_gain",
    "norm_abs_gain",
    "norm_rel_gain",
    "robustness_score",
)
#: Scores of the whole distribution (no per-image values, no interval).
DISTRIBUTION_SCORES: tuple[str, ...] = ("wasserstein_score", "energy_distance_score")
#: Interval bound keys, in the order of :data:`PER_IMAGE_SCORES`.
INTERVAL_KEYS: tuple[str, ...] = tuple(f"{k}_ci_{b}" for k in PER_IMAGE_SCORES for b in ("low", "high"))
#: Every key :func:`score_group` returns, in reporting order.
SCORE_KEYS: tuple[str, ...] = ("n", *PER_IMAGE_SCORES, *DISTRIBUTION_SCORES, *INTERVAL_KEYS)

#: Confidence level of the Student-t intervals.
CONFIDENCE = 0.95
#: Added to the denominator of the robustness score (benchmark code: ``eps=1e-6``).
ROBUSTNESS_EPS = 1e-6
# sklearn's MinMaxScaler treats a data range below this as zero (``_handle_zeros_in_scale``).
_CONSTANT_RANGE = 10 * np.finfo(np.float64).eps


def orient(values: Any, lower_better: bool) -> np.ndarray:
    """Raw metric values -> quality q (higher is better): ``-values`` for lower-is-better metrics."""
    return conventions.orient(np.asarray(values, dtype=np.float64), lower_better)


@dataclass(frozen=True)
class MinMaxScale:
    """Min-max scaling ``s(x) = (x - low) / span`` fitted on the clear scores of one group.

    As scikit-learn's ``MinMaxScaler`` (which the benchmark uses): NaNs are ignored when fitting,
    and a constant group (span below 10 machine epsilons) gets ``span = 1``, so ``s(x) = x - low``:
    the clear scores all map to 0 and attacked scores keep their raw distance from them, instead of
    a division by zero.
    """

    low: float
    span: float

    @classmethod
    def fit(cls, clear: Any) -> MinMaxScale:
        """Fit on the clear (oriented) scores of a group."""
        arr = np.asarray(clear, dtype=np.float64).reshape(-1)
        if arr.size == 0 or np.all(np.isnan(arr)):
            raise ValueError("cannot fit min-max scaling on an empty group; give at least one clear score")
        low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
        span = high - low
        return cls(low=low, span=1.0 if span < _CONSTANT_RANGE else span)

    def __call__(self, values: Any) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.low) / self.span


def _pair(clear: Any, attacked: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(clear, dtype=np.float64).reshape(-1)
    a = np.asarray(attacked, dtype=np.float64).reshape(-1)
    if c.shape != a.shape:
        raise ValueError(
            f"clear and attacked scores must pair up image by image; got {c.size} clear and {a.size} attacked"
        )
    if c.size == 0:
        raise ValueError("empty group: give at least one image's clear and attacked score")
    return c, a


def _scaled(clear: Any, attacked: Any, scale: MinMaxScale | None) -> tuple[np.ndarray, np.ndarray]:
    c, a = _pair(clear, attacked)
    scale = MinMaxScale.fit(c) if scale is None else scale
    return scale(c), scale(a)


def absolute_gain(clear: Any, attacked: Any) -> np.ndarray:
    """Per-image raw absolute gain ``a - c`` of oriented scores."""
    c, a = _pair(clear, attacked)
    return a - c


def relative_gain(clear: Any, attacked: Any) -> np.ndarray:
    """Per-image raw relative gain ``(a - c) / (c + 1)`` of oriented scores.

    The denominator is the oriented clear score plus one, so the value is only meaningful while
    ``c > -1``: for lower-is-better metrics (oriented scores are negative) its sign flips. The
    normalised relative gain has no such limit.
    """
    c, a = _pair(clear, attacked)
    return (a - c) / (c + 1.0)


def classic_relative_gain(clear: Any, attacked: Any, eps: float = ROBUSTNESS_EPS) -> np.ndarray:
    """Per-image ``(a - c) / (c + eps)``: the benchmark code's ``relative_gain_classic``.

    Not part of :func:`score_group` (the methodology's relative gain divides by ``c + 1``); kept to
    compare with numbers the benchmark reports under that name.
    """
    c, a = _pair(clear, attacked)
    return (a - c) / (c + eps)


def normalized_absolute_gain(clear: Any, attacked: Any, scale: MinMaxScale | None = None) -> np.ndarray:
    """Per-image ``s(a) - s(c)``; ``scale`` defaults to min-max fitted on ``clear``."""
    sc, sa = _scaled(clear, attacked, scale)
    return sa - sc


def normalized_relative_gain(clear: Any, attacked: Any, scale: MinMaxScale | None = None) -> np.ndarray:
    """Per-image ``(s(a) - s(c)) / (s(c) + 1)``; ``scale`` defaults to min-max fitted on ``clear``."""
    sc, sa = _scaled(clear, attacked, scale)
    return (sa - sc) / (sc + 1.0)


def robustness_score(
    clear: Any, attacked: Any, scale: MinMaxScale | None = None, eps: float = ROBUSTNESS_EPS
) -> np.ndarray:
    """Per-image robustness ``log10(max(1 - s(c), s(c)) / (|s(c) - s(a)| + eps))`` (benchmark code).

    The numerator is the distance from the scaled clear score to the farther end of [0, 1], the most
    an attack could move it; R is large when the attack moved the metric little relative to that.
    """
    sc, sa = _scaled(clear, attacked, scale)
    return np.log10(np.maximum(1.0 - sc, sc) / (np.abs(sc - sa) + eps))


def _signed_distance(distance: float, sc: np.ndarray, sa: np.ndarray) -> float:
    return float(distance * np.sign(np.mean(sa) - np.mean(sc)))


def wasserstein_score(clear: Any, attacked: Any, scale: MinMaxScale | None = None) -> float:
    """``W1(s(c), s(a))`` signed by the direction of the mean shift (positive: the metric rose)."""
    sc, sa = _scaled(clear, attacked, scale)
    return _signed_distance(stats.wasserstein_distance(sc, sa), sc, sa)


def energy_distance_score(clear: Any, attacked: Any, scale: MinMaxScale | None = None) -> float:
    """Energy distance ``E(s(c), s(a))`` signed by the direction of the mean shift."""
    sc, sa = _scaled(clear, attacked, scale)
    return _signed_distance(stats.energy_distance(sc, sa), sc, sa)


def t_interval(values: Any, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (``sem`` with ddof=1).

    As ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sem)``. With fewer than two
    values the bounds are NaN (no spread to estimate); with zero spread the interval is the mean
    itself (scipy refuses ``scale=0`` but ``mean +- t * 0`` is exact).
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        return math.nan, math.nan
    mean = float(np.mean(arr))
    sem = float(stats.sem(arr))
    if not math.isfinite(sem):
        return math.nan, math.nan
    if sem == 0.0:
        return mean, mean
    low, high = stats.t.interval(confidence, arr.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def score_group(
    clear: Any, attacked: Any, lower_better: bool = False, confidence: float = CONFIDENCE
) -> dict[str, float]:
    """Every score of one group (one metric x one attack [x amplitude x dataset]).

    Args:
        clear: raw metric values of the clean images, one per image.
        attacked: raw metric values of the attacked images, in the same order.
        lower_better: True for metrics whose lower raw value means better quality; the values are
            oriented (``q = -score``) before scoring, so positive gains always mean "fooled".
        confidence: level of the Student-t intervals of the per-image means.

    Returns:
        A dict with the keys of :data:`SCORE_KEYS`: ``n``, the five per-image means, the two
        distribution scores and ``<score>_ci_low`` / ``<score>_ci_high`` for each per-image mean.
    """
    c, a = _pair(orient(clear, lower_better), orient(attacked, lower_better))
    scale = MinMaxScale.fit(c)
    per_image = {
        "abs_gain": absolute_gain(c, a),
        "rel_gain": relative_gain(c, a),
        "norm_abs_gain": normalized_absolute_gain(c, a, scale),
        "norm_rel_gain": normalized_relative_gain(c, a, scale),
        "robustness_score": robustness_score(c, a, scale),
    }
    out: dict[str, float] = {"n": c.size}
    out.update({key: float(np.mean(values)) for key, values in per_image.items()})
    out["wasserstein_score"] = wasserstein_score(c, a, scale)
    out["energy_distance_score"] = energy_distance_score(c, a, scale)
    for key, values in per_image.items():
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = t_interval(values, confidence)
    return {key: out[key] for key in SCORE_KEYS}


#: a score counts as raised when it moved by more than this share of its own size (float32 noise stays under it)
IMPROVEMENT_TOLERANCE = 1e-6


def improved_fraction(clear: Any, attacked: Any, lower_better: bool = False) -> float:
    """The share of images whose quality the attack raised: oriented ``a_i - c_i > 1e-6 * (|c_i| + 1)``.

    The attack loss J = 1 - q / range falls exactly when q rises, so this is the share of images on which
    the attack's loss improved from the clean image to its result; an attack that raised fewer than half
    made no progress (docs/verdict.md, "no progress"). Not a benchmark score.
    """
    c, a = _pair(orient(clear, lower_better), orient(attacked, lower_better))
    return float(np.mean(a - c > IMPROVEMENT_TOLERANCE * (np.abs(c) + 1.0)))


# -- rank stability: how well the attacked scores keep the clean scores' order -----------------------

#: Correlations between clean and attacked scores of a group (scipy.stats), each with a 95% interval.
RANK_SCORES: tuple[str, ...] = ("spearman", "kendall", "pearson")
#: Every key :func:`rank_scores` returns.
RANK_KEYS: tuple[str, ...] = (*RANK_SCORES, *(f"{k}_ci_{b}" for k in RANK_SCORES for b in ("low", "high")))

# Fisher z standard errors: Pearson 1/sqrt(n-3); Spearman sqrt(1.06/(n-3)) and Kendall sqrt(0.437/(n-4))
# (Fieller, Hartley & Pearson, Biometrika 1957), with the least n each needs.
_FISHER = {"pearson": (1.0, 3), "spearman": (1.06, 3), "kendall": (0.437, 4)}


def fisher_interval(r: float, n: int, kind: str = "pearson", confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Confidence interval of a correlation by Fisher's z transform: ``tanh(atanh(r) -+ z * se)``.

    Args:
        r: the correlation.
        n: the number of pairs; too few for the kind (Pearson and Spearman need 4, Kendall 5)
            give NaN bounds.
        kind: ``pearson``, ``spearman`` or ``kendall`` (the standard error differs; see ``_FISHER``).

    A perfect correlation (``|r| = 1``) has the interval ``[r, r]``.
    """
    factor, lost = _FISHER[kind]
    if not math.isfinite(r) or n <= lost:
        return math.nan, math.nan
    if abs(r) >= 1.0:
        return r, r
    z = math.atanh(r)
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(factor / (n - lost))
    return math.tanh(z - half), math.tanh(z + half)


def correlations(x: Any, y: Any, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Spearman, Kendall (tau-b) and Pearson correlation of ``x`` and ``y``, with Fisher z intervals.

    Computed by ``scipy.stats.spearmanr``, ``kendalltau`` and ``pearsonr``; NaN where a correlation
    is undefined (fewer than two pairs, or a constant input).
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"correlations need paired values; got {a.size} and {b.size}")
    values = dict.fromkeys(RANK_SCORES, math.nan)
    if a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        values["spearman"] = float(stats.spearmanr(a, b).statistic)
        values["kendall"] = float(stats.kendalltau(a, b).statistic)
        values["pearson"] = float(stats.pearsonr(a, b).statistic)
        # a perfect correlation computed as 0.9999999999999999 is a perfect correlation
        values = {k: (math.copysign(1.0, v) if abs(abs(v) - 1.0) < 1e-12 else v) for k, v in values.items()}
    out: dict[str, float] = dict(values)
    for kind, r in values.items():
        out[f"{kind}_ci_low"], out[f"{kind}_ci_high"] = fisher_interval(r, a.size, kind, confidence)
    return {key: out[key] for key in RANK_KEYS}


def rank_scores(clear: Any, attacked: Any, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Rank stability of a group: :func:`correlations` of the clean and the attacked raw scores.

    1 means the attack kept the metric's ranking of the images; lower means it reshuffled them
    (no subjective scores needed). Orientation does not matter: both sides are the same metric.
    """
    c, a = _pair(clear, attacked)
    return correlations(c, a, confidence)


#: Agreement with subjective scores, before and after the attack (with a MOS per image).
MOS_SCORES: tuple[str, ...] = tuple(f"{k}_{side}" for side in ("clean", "attacked") for k in ("srocc", "plcc", "krocc"))
#: How much agreement the attack cost: clean minus attacked, per correlation.
MOS_DROPS: tuple[str, ...] = ("srocc_drop", "plcc_drop", "krocc_drop")
#: Every key :func:`mos_scores` returns.
MOS_KEYS: tuple[str, ...] = (
    "n_mos",
    *MOS_SCORES,
    *MOS_DROPS,
    *(f"{k}_ci_{b}" for k in MOS_SCORES for b in ("low", "high")),
)
_MOS_NAMES = {"spearman": "srocc", "pearson": "plcc", "kendall": "krocc"}


def mos_scores(clear: Any, attacked: Any, mos: Any, confidence: float = CONFIDENCE) -> dict[str, float]:
    """SROCC, PLCC and KROCC of the clean and of the attacked scores against subjective scores.

    The usual IQA agreement measures (Spearman, Pearson, Kendall; :func:`correlations`, with
    Fisher z intervals) on raw values: a lower-is-better metric correlates negatively with MOS,
    and ``*_drop = clean - attacked`` is how much agreement the attack cost (sign-adjusted, so a
    positive drop is a loss for either orientation). Images without a finite MOS are left out;
    ``n_mos`` counts the rest.
    """
    c, a = _pair(clear, attacked)
    m = np.asarray(mos, dtype=np.float64).reshape(-1)
    if m.shape != c.shape:
        raise ValueError(f"one MOS per image: got {m.size} MOS for {c.size} images")
    keep = np.isfinite(m)
    c, a, m = c[keep], a[keep], m[keep]
    out: dict[str, float] = {"n_mos": int(keep.sum())}
    for side, values in (("clean", c), ("attacked", a)):
        for kind, value in correlations(values, m, confidence).items():
            base, _, bound = kind.partition("_")
            out[f"{_MOS_NAMES[base]}_{side}" + (f"_{bound}" if bound else "")] = value
    for name in ("srocc", "plcc", "krocc"):
        sign = 1.0 if out[f"{name}_clean"] >= 0 or math.isnan(out[f"{name}_clean"]) else -1.0
        out[f"{name}_drop"] = sign * (out[f"{name}_clean"] - out[f"{name}_attacked"])
    return {key: out[key] for key in MOS_KEYS}


def group_scores(clear: Any, attacked: Any, lower_better: bool = False, mos: Any = None) -> dict[str, float]:
    """Everything a group is scored by: :func:`score_group` (the benchmark's scores), :func:`rank_scores`
    and, with subjective scores (``mos``, one per image, NaN where unknown), :func:`mos_scores`."""
    scores = {**score_group(clear, attacked, lower_better=lower_better), **rank_scores(clear, attacked)}
    if mos is not None:
        scores.update(mos_scores(clear, attacked, mos))
    return scores


# -- clean vs adversarial image distortion ---------------------------------------------------------


def _as_hwc_batch(images: Any, name: str) -> np.ndarray:
    if hasattr(images, "detach"):  # a torch tensor; avoids importing torch here
        images = images.detach().cpu().double().numpy()
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected an (N, 3, H, W) RGB batch (or one (3, H, W) image), got shape {arr.shape}")
    return arr.transpose(0, 2, 3, 1)


def image_distortion(clean: Any, adversarial: Any) -> dict[str, np.ndarray]:
    """Per-image PSNR, SSIM and MSE between clean and adversarial images (data range 1).

    Args:
        clean: (N, 3, H, W) batch in [0, 1], a torch tensor or numpy array.
        adversarial: the attacked batch, same shape (values may leave [0, 1], as unclamped
            universal perturbations do).

    Returns:
        ``{"psnr": (N,), "ssim": (N,), "mse": (N,)}`` float64 arrays; PSNR is ``inf`` for an image
        the attack left unchanged. Computed by scikit-image on float64 H x W x 3 arrays.
    """
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    x = _as_hwc_batch(clean, "clean")
    y = _as_hwc_batch(adversarial, "adversarial")
    if x.shape != y.shape:
        raise ValueError(f"clean and adversarial batches differ in shape: {x.shape} vs {y.shape}")
    psnr, ssim, mse = (np.empty(len(x)) for _ in range(3))
    with np.errstate(divide="ignore"):
        for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
            mse[i] = mean_squared_error(xi, yi)
            psnr[i] = peak_signal_noise_ratio(xi, yi, data_range=1.0) if mse[i] > 0 else math.inf
            ssim[i] = structural_similarity(xi, yi, channel_axis=2, data_range=1.0)
    return {"psnr": psnr, "ssim": ssim, "mse": mse}


#: Same as :func:`image_distortion` (PSNR and SSIM are similarities, MSE a distance).


def budget_auc(budgets: Any, values: Any) -> float:
    """A score integrated over L-inf budgets: the trapezoidal area under score against budget, over the span.

    For budgets b_1 < ... < b_n (in units of 1/255, so 2/255 is 2) and the score v_i at each::

        auc = 1 / (b_n - b_1) * sum_{i=1}^{n-1} (b_{i+1} - b_i) * (v_i + v_{i+1}) / 2

    which is the mean of the piecewise-linear score curve over [b_1, b_n]; dividing by the span
    makes the unit cancel, and a score that is the same at every budget has that value as its area.
    ``gain_auc`` is this of the normalised absolute gain, ``robustness_auc`` of R.

    Args:
        budgets: the budgets, in any order (sorted here together with ``values``).
        values: the score at each budget.

    Returns:
        The area over the span; with one finite point, its value; ``nan`` with none. Points whose
        value is not finite are left out.

    Raises:
        ValueError: ``budgets`` and ``values`` differ in length, or a budget appears twice.
    """
    b = np.asarray(budgets, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if b.shape != v.shape:
        raise ValueError(f"budget_auc needs one value per budget, got {b.size} budgets and {v.size} values")
    if np.unique(b).size != b.size:
        raise ValueError(f"budget_auc needs distinct budgets, got {sorted(b.tolist())}")
    keep = np.isfinite(v) & np.isfinite(b)
    b, v = b[keep], v[keep]
    if b.size == 0:
        return math.nan
    order = np.argsort(b)
    b, v = b[order], v[order]
    if b.size == 1:
        return float(v[0])
    area = float(np.sum(np.diff(b) * (v[1:] + v[:-1]) / 2.0))
    return area / float(b[-1] - b[0])
