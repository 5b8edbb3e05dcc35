"""How fast the suite attacks a metric, against the metric's own limit and a one-image-at-a-time loop.

The floor is the metric itself: an attack with K gradient iterations cannot beat K forward+backward
passes of the metric on the same batch. For one metric, device, image size and batch size,
:func:`run_bench` measures side by side

* ``floor``: one forward+backward pass (gradient with respect to the input only) per image;
* each image-specific attack as the suite runs it (batched) and as a reference loop that runs the
  same attack the way the MSU benchmark's research code does: one image at a time, metric
  parameters requiring gradients and ``loss.backward()`` filling them
  (:func:`attacks.base.research_code_gradients`); efficiency is ``iterations x floor / attack time``;
* ``forward``: the metric's best forward throughput (no gradient), the best median time per image over
  batches of 1, 2, 4, ... (:func:`forward_seconds`), against one image at a time; the floor of the
  black-box attacks, which only score;
* each black-box attack at ``queries`` per image, batched as the suite runs it (the oracle's measured
  query batch, :mod:`attacks.query_batch`) and one image at a time; efficiency is ``queries used x
  forward floor / attack time`` (docs/speed.md compares them with the source's own code);
* universal-perturbation training: images per second of optimisation at the batch size, against
  the same training one image per step with research-code gradients;
* evaluation: scoring clean and attacked images, as the suite does it (batched, under
  ``torch.no_grad``, clean scores once per image shared by every attack) and as the reference
  does it (one image at a time with gradients recorded, the clean score recomputed per attack).

Every figure is the median of ``repeats`` timed runs after ``warmup`` untimed ones, with the
device synchronised around each. docs/speed.md shows the command, measured figures and the projection.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from iqa_robustness.attacks import attack_class, create_attack
from iqa_robustness.attacks.base import loss_grad, research_code_gradients
from iqa_robustness.metrics.base import Metric
from iqa_robustness.runner.config import sync_device

log = logging.getLogger(__name__)

#: The image-specific attacks benchmarked by default: gradient attacks, then black-box ones.
DEFAULT_ATTACKS: tuple[str, ...] = (
    *("fgsm", "ifgsm", "mifgsm", "amifgsm", "korhonen", "madc"),
    *("square", "parsimonious", "patch-rs", "nes", "onepixel"),
)
#: Batches the forward floor is measured at (up to the largest not above ``max(64, batch size)``).
FORWARD_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: The universal attacks whose training is benchmarked by default.
DEFAULT_UNIVERSAL: tuple[str, ...] = ("uap",)


@dataclasses.dataclass
class BenchRow:
    """One line of the table.

    Attributes:
        task: ``floor`` (batched), ``floor:batch1`` (one image at a time), ``forward`` (the fastest
            forward pass per image), an attack name, ``train:<attack>`` or ``evaluation``.
        seconds_per_image: the suite's median time per image.
        reference_seconds_per_image: the one-image-at-a-time reference's, if measured.
        iterations: forward+backward passes per image the task needs (0 for evaluation); for a
            black-box attack the forward passes (queries) it made per image.
        floor_seconds_per_image: the floor the efficiency is computed against (``forward`` for a
            black-box attack, ``floor`` for the others).
        peak_memory_mb: peak device memory during the suite's runs (CUDA only; NaN on CPU).
    """

    task: str
    seconds_per_image: float
    reference_seconds_per_image: float = float("nan")
    iterations: int = 0
    floor_seconds_per_image: float = float("nan")
    peak_memory_mb: float = float("nan")

    @property
    def images_per_second(self) -> float:
        return 1.0 / self.seconds_per_image if self.seconds_per_image > 0 else float("inf")

    @property
    def speedup(self) -> float:
        """How many times faster than the reference loop."""
        return self.reference_seconds_per_image / self.seconds_per_image

    @property
    def efficiency(self) -> float:
        """``iterations x floor / time``: 1.0 means the attack costs exactly its metric passes."""
        if not self.iterations:
            return float("nan")
        return self.iterations * self.floor_seconds_per_image / self.seconds_per_image

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "images_per_s": self.images_per_second,
            "s_per_image": self.seconds_per_image,
            "reference_s_per_image": self.reference_seconds_per_image,
            "speedup": self.speedup,
            "iterations": self.iterations,
            "efficiency": self.efficiency,
            "peak_memory_mb": self.peak_memory_mb,
        }


@dataclasses.dataclass
class BenchConfig:
    """What to measure.

    Attributes:
        batch_size: images per batch in the suite's runs.
        image_size: side of the square test images.
        attacks: image-specific attacks to time.
        universal: universal attacks whose training to time.
        repeats, warmup: timed and untimed runs per figure.
        reference_images: images the one-at-a-time reference loop processes per run.
        queries: query budget per image of the black-box attacks.
        train_steps: optimisation steps per timed universal training run.
        seed: seed of the test images.
    """

    batch_size: int = 8
    image_size: int = 256
    attacks: Sequence[str] = DEFAULT_ATTACKS
    universal: Sequence[str] = DEFAULT_UNIVERSAL
    repeats: int = 3
    warmup: int = 1
    reference_images: int = 4
    queries: int = 200
    train_steps: int = 4
    seed: int = 0


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync_device(device)
        start = time.perf_counter()
        fn()
        sync_device(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_seconds(
    metric: Metric, images: torch.Tensor, batches: Sequence[int] = FORWARD_BATCHES, repeats: int = 5
) -> dict[int, float]:
    """Seconds per image of the metric's forward pass (no gradient) at each batch in ``batches``.

    A batch is made of ``images`` repeated; each figure is the median of ``repeats`` timed calls after an
    untimed one, as every other figure of the bench: the throughput the metric sustains call after call,
    which an attack's calls can reach (the fastest single call of a handful runs 5-15 % under that median on
    two CPU cores, and no sequence of calls keeps to it). Batches stop growing once a call takes a second:
    a larger one gains nothing but memory.
    """
    device, out = metric.device, {}
    with torch.no_grad():
        for size in batches:
            batch = _repeated(images, size)
            seconds = median_seconds(lambda b=batch: metric(b).cpu(), device, repeats, warmup=1)
            out[size] = seconds / size
            if seconds >= 1.0:
                break
    return out


def forward_throughput(
    metric: Metric,
    images: torch.Tensor,
    batches: Sequence[int] = FORWARD_BATCHES,
    window: float = 0.5,
    rounds: int = 3,
) -> dict[int, tuple[float, int]]:
    """The metric's forward pass (no gradient) at each batch in ``batches``, calls back to back for a while.

    Throughput is images over time, taken over as long a run of calls as an attack makes, not the typical
    single call: a process shares the machine, and every call an attack makes pays the pauses other
    processes cause, which a median of a few calls leaves out (on the project's 2-core machine the median
    of cnniqa-live's calls over 3 s ran up to 15 % faster than their mean, typically 3-6 %, and in one
    process the fastest batch's median of 5 calls moved by up to 20 % between measurements 15 s apart).
    Each batch gets ``rounds`` windows of calls lasting at least ``window`` seconds (at least two calls
    each, after one untimed call per batch); the rounds visit every batch in turn, so that a slow stretch
    of the machine falls on all of them rather than on one. Batches stop growing once a call takes a
    second.

    Returns:
        Per batch, the seconds its timed calls took in all and the images they scored: add two
        measurements' figures to pool them, divide to get seconds per image (:func:`per_image`).
    """
    device, totals, inputs = metric.device, {}, {}
    with torch.no_grad():
        for size in batches:  # warm-up, and the sizes whose single call already takes a second
            inputs[size] = _repeated(images, size)
            sync_device(device)
            start = time.perf_counter()
            metric(inputs[size]).cpu()
            totals[size] = (0.0, 0)
            if time.perf_counter() - start >= 1.0:
                break
        for _ in range(rounds):
            for size in totals:
                seconds, calls = 0.0, 0
                while calls < 2 or seconds < window:
                    sync_device(device)
                    start = time.perf_counter()
                    metric(inputs[size]).cpu()
                    seconds += time.perf_counter() - start
                    calls += 1
                spent, scored = totals[size]
                totals[size] = (spent + seconds, scored + calls * size)
    return totals


def _repeated(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch of ``size`` images: ``images`` repeated as often as needed, the last copy cut short."""
    return images.repeat(-(-size // images.shape[0]), 1, 1, 1)[:size]


def per_image(totals: dict[int, tuple[float, int]]) -> dict[int, float]:
    """Seconds per image per batch from :func:`forward_throughput`'s (seconds, images) totals."""
    return {size: seconds / scored for size, (seconds, scored) in totals.items() if scored}


def bench_images(n: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``n`` photographs of the built-in sample set, centre-cropped to ``size`` and repeated as needed.

    Real content rather than noise: some metrics take data-dependent paths (NIQE's patch
    selection, MADC's pull-back loop).
    """
    import torch.nn.functional as F

    from iqa_robustness.data.registry import resolve_dataset

    images = []
    for item in resolve_dataset("sample"):
        img = item.load()
        scale = size / min(img.shape[-2:])
        img = F.interpolate(img[None], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (img.shape[-2] - size) // 2, (img.shape[-1] - size) // 2
        images.append(img[:, top : top + size, left : left + size].clamp(0, 1))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randint(len(images), (n,), generator=generator)
    return torch.stack([images[i] for i in order]).to(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


class FullReferenceTimed(Metric):
    """A full-reference metric timed as the attacks call it, each input with a reference of its own.

    The reference of an input is its own detached copy shifted by one pixel: it costs the metric
    what a real reference costs, whatever batch the bench feeds it (one image, a batch, the
    256x256 training batches).
    """

    def __init__(self, metric: Metric) -> None:
        super().__init__(dataclasses.replace(metric.spec, kind="nr-image"), metric.weights_mode)
        self.full_reference = metric

    @property
    def random_scores(self) -> bool:
        return self.full_reference.random_scores

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with self.full_reference.reference(x.detach().roll(1, dims=-1)):
            return self.full_reference(x)


def run_bench(
    metric: Metric,
    config: BenchConfig,
    report: Callable[[BenchRow], None] | None = None,
    report_forward: Callable[[dict[int, float]], None] | None = None,
) -> list[BenchRow]:
    """Measure the floor, each attack, universal training and evaluation; see the module docstring.

    A full-reference metric is timed through :class:`FullReferenceTimed`. ``report`` gets every row as
    it is measured, ``report_forward`` the forward pass's seconds per image at each batch.
    """
    if metric.spec.is_full_reference:
        metric = FullReferenceTimed(metric)
    device = metric.device
    n, timing = config.batch_size, {"repeats": config.repeats, "warmup": config.warmup}
    batch = bench_images(n, config.image_size, device, config.seed)
    singles = [batch[i : i + 1] for i in range(min(config.reference_images, n))]
    rows: list[BenchRow] = []

    def add(row: BenchRow) -> None:
        rows.append(row)
        if report is not None:
            report(row)

    def one_at_a_time(fn: Callable[[torch.Tensor], Any]) -> float:
        with research_code_gradients(metric):
            return median_seconds(lambda: [fn(x) for x in singles], device, **timing) / len(singles)

    _peak_reset(device)
    floor = median_seconds(lambda: loss_grad(metric, batch), device, **timing) / n
    peak = _peak(device)
    reference_floor = one_at_a_time(lambda x: loss_grad(metric, x))
    add(BenchRow("floor", floor, reference_floor, 1, floor, peak))
    # the suite's own gradient one image at a time: what batching alone gains
    single = median_seconds(lambda: [loss_grad(metric, x) for x in singles], device, **timing) / len(singles)
    add(BenchRow("floor:batch1", single, reference_floor, 1, floor))

    blackbox = [name for name in config.attacks if attack_class(name).family == "blackbox"]
    forward = float("nan")
    if blackbox:
        by_batch = forward_seconds(metric, batch, [b for b in FORWARD_BATCHES if b <= max(64, n)], config.repeats)
        forward = min(by_batch.values())
        add(BenchRow("forward", forward, by_batch[1], 1, forward))
        log.info("forward: ms per image at each batch: %s", _per_batch(by_batch))
        if report_forward is not None:
            report_forward(by_batch)

    for name in config.attacks:
        if name in blackbox:
            add(_bench_blackbox(metric, name, batch, singles, config, forward))
            continue
        attack = create_attack(name)
        if attack.universal:
            raise ValueError(f"{name} is a universal attack; pass it with --universal to time its training")
        attack.check_metric(metric)
        _peak_reset(device)
        seconds = median_seconds(lambda a=attack: a(metric, batch), device, **timing) / n
        peak = _peak(device)
        reference = one_at_a_time(lambda x, a=attack: a(metric, x))
        add(BenchRow(name, seconds, reference, attack.iterations, floor, peak))

    for name in config.universal:
        add(_bench_training(metric, name, batch, config, floor))

    add(_bench_evaluation(metric, batch, singles, len(config.attacks) or 1, config))
    return rows


def _bench_blackbox(
    metric: Metric, name: str, batch: torch.Tensor, singles: list[torch.Tensor], config: BenchConfig, forward: float
) -> BenchRow:
    """A black-box attack at ``config.queries`` per image: batched, and one image at a time (the same code).

    Its iterations are the queries it made per image (One-pixel's schedule may use fewer than its budget).
    """
    from iqa_robustness.attacks.queries import recording_queries

    attack = create_attack(name, queries=config.queries)
    attack.check_metric(metric)
    device, timing = metric.device, {"repeats": config.repeats, "warmup": config.warmup}
    with recording_queries() as log_:
        attack(metric, batch)  # also lets the oracle measure its query batch before the timed runs
    used = sum(r.used for r in log_.records) / max(len(log_.records), 1)
    _peak_reset(device)
    seconds = median_seconds(lambda: attack(metric, batch), device, **timing) / batch.shape[0]
    peak = _peak(device)
    reference = median_seconds(lambda: [attack(metric, x) for x in singles], device, **timing) / len(singles)
    return BenchRow(name, seconds, reference, round(used), forward, peak)


def _per_batch(by_batch: dict[int, float]) -> str:
    return ", ".join(f"{b}: {t * 1e3:.3g}" for b, t in by_batch.items())


def _bench_training(metric: Metric, name: str, batch: torch.Tensor, config: BenchConfig, floor: float) -> BenchRow:
    """Images per second of universal-perturbation training at the batch size and at batch size 1.

    Training images are resized to the attack's training size (256x256), whatever ``image_size`` is;
    the floor is then measured again at that size.
    """
    from iqa_robustness.attacks.training import UAP_TRAIN_SIDE, uap_train_transform

    if not attack_class(name).universal:
        raise ValueError(f"{name} is not a universal attack; pass it with --attack")
    device, steps = metric.device, config.train_steps
    data = batch.cpu()  # resized to the 256x256 training size by the attack, as in every training run
    timing = {"repeats": config.repeats, "warmup": config.warmup}
    if batch.shape[-1] != UAP_TRAIN_SIDE or batch.shape[-2] != UAP_TRAIN_SIDE:
        train_batch = uap_train_transform(batch)
        floor = median_seconds(lambda: loss_grad(metric, train_batch), device, **timing) / batch.shape[0]

    def train(batch_size: int) -> float:
        attack = create_attack(name, batch_size=batch_size)
        seconds = median_seconds(lambda: attack.fit(metric, data, seed=config.seed, steps=steps), device, **timing)
        return seconds / (steps * batch_size)

    _peak_reset(device)
    seconds = train(config.batch_size)
    peak = _peak(device)
    with research_code_gradients(metric):
        reference = train(1)
    return BenchRow(f"train:{name}", seconds, reference, 1, floor, peak)


def _bench_evaluation(
    metric: Metric, batch: torch.Tensor, singles: list[torch.Tensor], n_attacks: int, config: BenchConfig
) -> BenchRow:
    """Scoring per image and attack: the suite's batched no-grad pass against the reference's."""
    device, n = metric.device, batch.shape[0]
    attacked = (batch + 0.01 * torch.randn_like(batch)).clamp(0, 1)
    timing = {"repeats": config.repeats, "warmup": config.warmup}

    def suite() -> None:
        with torch.no_grad():
            metric(batch).cpu()  # clean: once per image, shared by all attacks
            for _ in range(n_attacks):
                metric(attacked).cpu()

    def reference() -> None:
        for x in singles:
            y = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
            for _ in range(n_attacks):  # the clean score again for every attack, gradients recorded
                metric(x).item()
                metric(y).item()

    _peak_reset(device)
    seconds = median_seconds(suite, device, **timing) / (n * n_attacks)
    peak = _peak(device)
    with research_code_gradients(metric):
        reference_seconds = median_seconds(reference, device, **timing) / (len(singles) * n_attacks)
    return BenchRow("evaluation", seconds, reference_seconds, 0, float("nan"), peak)


def precision_difference(metric: Metric, batch: torch.Tensor, **speed_options: Any) -> float:
    """Largest change of the raw score, relative to the metric's range, that ``speed_options`` cause."""
    saved = {"autocast": metric.autocast_dtype, "channels_last": metric.channels_last}
    with torch.no_grad():
        metric.set_speed_options()
        exact = metric(batch).float()
        metric.set_speed_options(**speed_options)
        fast = metric(batch).float()
    metric.set_speed_options(**saved)
    return float((fast - exact).abs().max()) / metric.spec.range


@dataclasses.dataclass(frozen=True)
class TestSet:
    """A test set of the projection: its image count and size."""

    name: str
    images: int
    height: int
    width: int


#: The benchmark's test sets (docs/methodology.md): NIPS 2017 dev (299x299 crops), Vimeo-90k test
#: triplets (7824 x 3 frames of 448x256), Derf's blue_sky (250 frames of 1920x1080).
BENCHMARK_TEST_SETS: tuple[TestSet, ...] = (
    TestSet("nips2017", 1000, 299, 299),
    TestSet("vimeo-test", 7824 * 3, 256, 448),
    TestSet("derf-blue-sky", 250, 1080, 1920),
)
#: Universal training: epochs per attack (docs/methodology.md; cnn as its paper trains it).
BENCHMARK_EPOCHS = {"uap": 5, "cumulative-uap": 5, "generative-uap": 1, "cnn": 200}


def project_hours(
    rows: Sequence[BenchRow],
    image_side: int,
    *,
    test_sets: Sequence[TestSet] = BENCHMARK_TEST_SETS,
    train_images: int = 10_000,
    train_sets: int = 2,
    amplitudes: int = 3,
    epochs: dict[str, int] | None = None,
    reference: bool = False,
) -> dict[str, float]:
    """Hours one metric's full grid takes on the benchmarked device, from one :func:`run_bench` result.

    Per-image times are scaled by pixel count from the benchmarked ``image_side`` to each test
    set's size (attack cost grows about linearly with pixels for convolutional metrics; metrics
    that resize their input cost less). Universal attacks whose training was not benchmarked are
    charged at the ``uap`` training rate.

    With ``reference=True`` the one-image-at-a-time reference loop's times are used instead.

    Returns:
        Hours per part (``image attacks``, ``universal training``, ``evaluation``) and ``total``.
    """

    def per_image(row: BenchRow) -> float:
        return row.reference_seconds_per_image if reference else row.seconds_per_image

    epochs = {**BENCHMARK_EPOCHS, **(epochs or {})}
    by_task = {row.task: row for row in rows}
    bench_pixels = float(image_side * image_side)
    weighted_images = sum(t.images * t.height * t.width / bench_pixels for t in test_sets)
    # the benchmark's image attacks (the black-box ones are timed at a bench budget, not the grid's)
    image_attacks = [
        r
        for r in rows
        if r.task != "evaluation"
        and not r.task.startswith(("train:", "floor", "forward"))
        and attack_class(r.task).family != "blackbox"
    ]
    attack_seconds = sum(per_image(r) for r in image_attacks) * weighted_images
    fallback = by_task.get("train:uap")
    train_seconds = 0.0
    for name, n_epochs in epochs.items():
        row = by_task.get(f"train:{name}", fallback)
        if row is not None:
            train_seconds += n_epochs * train_images * train_sets * per_image(row)
    cases = len(image_attacks) + len(epochs) * train_sets * amplitudes
    evaluation = by_task.get("evaluation")
    eval_seconds = cases * weighted_images * per_image(evaluation) if evaluation else 0.0
    hours = {
        "image attacks": attack_seconds / 3600,
        "universal training": train_seconds / 3600,
        "evaluation": eval_seconds / 3600,
    }
    hours["total"] = sum(hours.values())
    return hours
