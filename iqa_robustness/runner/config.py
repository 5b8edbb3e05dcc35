"""What a session shares, as data: the options of the pytest plugin (:mod:`.options`), and the device facts.

Also the small device helpers every runner and ``iqa-robustness bench`` use: the per-case seed,
CUDA synchronisation for honest timings, the peak-memory reading, and the hardware's name.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import resource
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from iqa_robustness.conventions import (
    CPU_CERTIFY_SAMPLES,
    CPU_MAX_QUERIES,
    CPU_QUERY_IMAGES,
    CPU_UAP_MAX_STEPS,
    QUICK_MAX_QUERIES,
    QUICK_UAP_MAX_STEPS,
    parse_budgets,
)
from iqa_robustness.runner.options import check_shard, config_fields, grid_values

if TYPE_CHECKING:
    from iqa_robustness.attacks import Attack

#: Images per batch when the batch size is "auto"; CUDA out-of-memory halves it per metric.
AUTO_BATCH_SIZE = {"cuda": 32, "cpu": 8}

#: What a case does with an image the metric cannot take (too small, unreadable, a NaN clean score):
#: ``skip`` it as a row with its reason and score the rest, or ``fail`` (the error is raised).
OnBadImage = Literal["skip", "fail"]


@dataclasses.dataclass
class SuiteConfig:
    """Everything a session shares; the pytest options set these fields (:meth:`from_options`)."""

    device: str = "auto"
    batch_size: int = 0  # 0 = auto: AUTO_BATCH_SIZE for the device
    weights_dir: str | None = None
    random_weights: bool = False
    max_images: int | None = None  # images of an image set, clips of a video set
    max_frames: int | None = None  # frames per clip of a video set
    image_size: int | None = None
    seed: int = 0
    results_dir: Path = Path("results")
    uap_file: str | None = None
    uap_steps: int | None = None  # exact training steps; None = the attacks' epochs (capped on the CPU)
    uap_full_epochs: bool = False  # the attacks' epochs also on the CPU
    clamp_uap: bool = False
    pairs_to_save: int = 3
    amp: str | None = None  # "fp16" / "bf16": metrics run under autocast (scores change; see `bench --amp`)
    channels_last: bool = False
    clip_chunk_frames: int = 16  # frames of a clip read, perturbed and scored at a time (universal attacks)
    resume: bool = False  # reuse a result of an earlier session with the same case fingerprint
    image_shard: tuple[int, int] | None = None  # (k, n): this session tests every n-th image from the k-th (1-based)
    budgets: tuple[float, ...] | None = None  # L-inf budgets of --eps: the grid's budget axis (None: no axis)
    queries: int | None = None  # black-box query budget per image; None = the attacks' own (capped on the CPU)
    eot: int | None = None  # --eot: draws averaged per gradient of a metric found random (None: no EoT for them)
    grid: str = "full"  # "quick": the quick grid's caps on queries and training steps (docs/options.md)

    def __post_init__(self) -> None:
        if self.image_shard is not None:
            check_shard(*self.image_shard, option="--iqa-shard-images")
        if self.budgets is not None:
            self.budgets = parse_budgets(",".join(repr(float(b)) for b in self.budgets))

    on_bad_image: OnBadImage = "skip"
    mos_file: str | None = None  # subjective scores for every test set (default: a set's own mos.csv)
    jpeg_quality: tuple[int, ...] | None = None  # attack JPEG copies of the test images at these qualities
    jpeg_colour: str = "code"  # "code": the benchmark's JPEG (OpenCV reading RGB as BGR); "rgb": a correct one
    transfer_to: tuple[str, ...] | None = None  # --transfer-to: metrics that also score every case's adversarial images

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> SuiteConfig:
        """The config of a session run with these option values (name -> value as parsed; left out: default).

        ``grid`` ``auto`` is resolved here, on the device the options select, and the quick grid fills
        in what it cuts down (:func:`~iqa_robustness.runner.options.grid_values`).

        Raises:
            ValueError: a value that gives no field (``--iqa-transfer-to`` naming no metric).
        """
        on_cuda = resolve_device(str(values.get("device") or "auto")).type == "cuda"
        return cls(**config_fields(grid_values(values, on_cuda)))

    @property
    def skip_bad_images(self) -> bool:
        if self.on_bad_image not in ("skip", "fail"):
            raise ValueError(f"on_bad_image must be 'skip' or 'fail', got {self.on_bad_image!r}")
        return self.on_bad_image == "skip"

    def resolved_batch_size(self, device: torch.device) -> int:
        return self.batch_size or AUTO_BATCH_SIZE["cuda" if device.type == "cuda" else "cpu"]

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)

    def uap_training_steps(self, device: torch.device) -> tuple[int | None, int | None]:
        """``(steps, max_steps)`` for :meth:`~iqa_robustness.attacks.universal.UniversalAttack.fit` on ``device``."""
        if self.uap_steps is not None:
            return self.uap_steps, None
        if self.uap_full_epochs:
            return None, None
        if self.grid == "quick":
            return None, QUICK_UAP_MAX_STEPS
        return (None, None) if device.type == "cuda" else (None, CPU_UAP_MAX_STEPS)

    def query_limit(self, own: int, device: torch.device) -> tuple[int, str]:
        """The query budget a black-box attack with its own budget ``own`` runs with on ``device``, and why.

        Returns:
            ``(queries, rule)``: ``--queries N`` gives N; otherwise the attack's own budget on CUDA and at
            most :data:`~iqa_robustness.conventions.CPU_MAX_QUERIES` on the CPU. ``rule`` is the params' record.
        """
        if self.queries is not None:
            return self.queries, f"--queries {self.queries}"
        if self.grid == "quick":
            if own > QUICK_MAX_QUERIES:
                rule = f"auto: capped at {QUICK_MAX_QUERIES} on the quick grid (the attack's own: {own})"
                return QUICK_MAX_QUERIES, rule
            return own, "auto: the attack's own budget (under the quick grid's cap)"
        if device.type == "cuda":
            return own, "auto: the attack's own budget"
        if own > CPU_MAX_QUERIES:
            return CPU_MAX_QUERIES, f"auto: capped at {CPU_MAX_QUERIES} on the CPU (the attack's own: {own})"
        return own, "auto: the attack's own budget (under the CPU cap)"

    @staticmethod
    def certify_samples(given: int | None, device: torch.device, gpu: int) -> tuple[int, str]:
        """The noise samples per image a ``certify`` case takes on ``device``, and why.

        Args:
            given: the spec's ``n``, which wins; ``None`` for the default.
            gpu: the default on a GPU (the source's 1000).

        Returns:
            ``(n, rule)``: ``rule`` is the params' record (``auto: capped at 100 on the CPU``).
        """
        if given is not None:
            return given, "given"
        if device.type == "cuda":
            return gpu, "auto: the source's number on a GPU"
        return CPU_CERTIFY_SAMPLES, f"auto: capped at {CPU_CERTIFY_SAMPLES} on the CPU ({gpu} on a GPU)"

    def query_images(self, own: int, device: torch.device) -> tuple[int, str]:
        """Training images per query of a query-based universal attack whose own value is ``own`` (0: the
        whole training set), on ``device``, and why: its own on CUDA, at most
        :data:`~iqa_robustness.conventions.CPU_QUERY_IMAGES` on the CPU. ``rule`` is the params' record."""
        if device.type == "cuda":
            return own, "auto: the attack's own"
        if own == 0 or own > CPU_QUERY_IMAGES:
            mine = "the whole training set" if own == 0 else f"{own} images"
            return CPU_QUERY_IMAGES, f"auto: capped at {CPU_QUERY_IMAGES} training images on the CPU (its own: {mine})"
        return own, "auto: the attack's own (under the CPU cap)"

    @property
    def weights(self) -> str | None:
        return "random" if self.random_weights else self.weights_dir


def at_query_limit(attack: Attack, config: SuiteConfig, device: torch.device) -> Attack:
    """A query-based attack at the session's query budget on ``device`` (:meth:`SuiteConfig.query_limit`), a
    universal one also at its training images per query (:meth:`SuiteConfig.query_images`).

    Any other attack is returned as given.
    """
    if attack.iterations_attr != "queries":
        return attack
    queries, _ = config.query_limit(attack.iterations, device)
    attack = dataclasses.replace(attack, queries=queries)
    if attack.universal:  # a query scores a batch of training images: capped on the CPU too
        images, _ = config.query_images(attack.batch_size, device)
        attack = dataclasses.replace(attack, batch_size=images)
    return attack


def resolve_device(text: str) -> torch.device:
    """``auto`` -> ``cuda`` when present, else ``cpu``; any other torch device as given."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(text)


def take_shard(items: tuple, shard: tuple[int, int] | None) -> tuple:
    """Every n-th item from the k-th (``shard = (k, n)``, 1-based); all items without a shard."""
    if shard is None:
        return items
    k, n = shard
    return items[k - 1 :: n]


def stable_seed(base: int, *parts: object) -> int:
    """A per-case seed independent of execution order (xdist runs cases in any order)."""
    return (base + zlib.crc32("|".join(map(str, parts)).encode())) % (2**31 - 1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS: the process high-water mark, not per case.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings cover it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def device_name(device: torch.device) -> str:
    """The hardware behind a device, for provenance: the GPU's name, or the CPU's model.

    The CPU's model is the first ``model name`` of ``/proc/cpuinfo`` on Linux, else what
    :func:`platform.processor` says (macOS, Windows), else the machine type.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
