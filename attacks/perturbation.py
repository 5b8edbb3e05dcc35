"""Universal perturbations as artefacts: the :class:`Perturbation`, its tiling, and its file formats.

A trained universal attack (Shumitskaya et al., "Towards adversarial robustness verification of
no-reference image- and video-quality metrics", CVIU 2024; the MSU Metrics Robustness Benchmark,
Antsiferova et al., AAAI 2024) is one perturbation for every image or an image-conditioned
generator. At test time the perturbation is tiled from the top-left corner to the image size (no
resize); a generator runs on the image (see :meth:`Perturbation.perturbation_for`).

Files: a delta saves as float32 ``.npy`` (H, W, 3) RGB, the MSU layout, plus a PNG view in the
CVIU encoding ``(delta + 0.5) * 255`` and a ``.json`` of provenance; a generator saves as a ``.pt``
state dict. :func:`load_perturbation` reads MSU ``.npy`` files, the CVIU paper's PNGs
(``png / 255 - 0.5``) and generator files, including the published FACPA generators.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._unet import GRANULE, UNetGenerator

log = logging.getLogger(__name__)

#: ways to run an image-conditioned generator on sides that are not multiples of 256
TEST_TIME_MODES = ("tile", "pad")
_GENERATOR_CHUNK = 8


# --------------------------------------------------------------------------- tiling


def tile_perturbation(delta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Repeat ``delta`` (..., h, w) from the top-left corner and crop to (..., height, width).

    This is the MSU benchmark's ``np.tile(uap, (H // h + 1, W // w + 1, 1))[:H, :W]``; nothing is
    resized, so a 256x256 perturbation keeps its pixels on a 299x299 image.
    """
    h, w = delta.shape[-2:]
    reps = [1] * (delta.ndim - 2) + [math.ceil(height / h), math.ceil(width / w)]
    return delta.repeat(*reps)[..., :height, :width]


# --------------------------------------------------------------------------- the artefact


@dataclasses.dataclass
class Perturbation:
    """A trained universal perturbation, or an image-conditioned generator that makes one per image.

    Exactly one of ``delta`` and ``generator`` is set.

    Attributes:
        delta: (1, 3, H, W) float32 perturbation, applied tiled.
        generator: U-Net whose output times ``scale`` is the perturbation of its input image.
        scale: L-inf bound of a generator's output (10/255).
        meta: provenance: attack, metric, hyperparameters, training data, seed, training time.
        from_cache: True when :meth:`attacks.universal.UniversalAttack.fit` reused a saved run instead of training.
        path: the file this was loaded from, if any.
    """

    delta: torch.Tensor | None = None
    generator: UNetGenerator | None = None
    scale: float = 10 / 255
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    from_cache: bool = False
    path: Path | None = None

    def __post_init__(self) -> None:
        if (self.delta is None) == (self.generator is None):
            raise ValueError("a Perturbation holds either a delta or a generator, not both or neither")
        if self.delta is not None:
            delta = self.delta.detach().float()
            if delta.ndim == 3:
                delta = delta.unsqueeze(0)
            if delta.ndim != 4 or delta.shape[:2] != (1, 3):
                raise ValueError(f"a perturbation delta must be (1, 3, H, W) or (3, H, W), got {tuple(delta.shape)}")
            self.delta = delta
        if self.generator is not None:
            self.generator.eval()
            for p in self.generator.parameters():
                p.requires_grad_(False)

    # -- facts ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``delta`` (one perturbation for every image) or ``generator`` (one per image)."""
        return "delta" if self.delta is not None else "generator"

    @property
    def linf(self) -> float:
        """The largest absolute pixel value of the perturbation (before the amplitude)."""
        return float(self.delta.abs().max()) if self.delta is not None else float(self.scale)

    def to_numpy(self) -> np.ndarray:
        """The delta as (H, W, 3) float32 RGB, the MSU ``.npy`` layout."""
        if self.delta is None:
            raise TypeError("a generator has no single delta; call perturbation_for(images) instead")
        return np.ascontiguousarray(self.delta[0].permute(1, 2, 0).cpu().numpy().astype(np.float32))

    # -- use -----------------------------------------------------------------------------
    def perturbation_for(self, images: torch.Tensor, *, test_time: str = "tile") -> torch.Tensor:
        """The perturbation at the size of ``images`` (N, 3, H, W): (1, 3, H, W) or (N, 3, H, W).

        Args:
            images: the clean batch (frames of a video are a batch too).
            test_time: for a generator, how sides that are not multiples of 256 are handled:
                ``tile`` (CVIU code): run the generator on the top-left crop whose sides are the
                largest multiples of 256 (sides under 256 are edge-padded up to 256) and tile its
                output over the image; ``pad``: edge-pad the image to the next multiples of 256,
                run the generator once on all of it and crop the output.
        """
        height, width = images.shape[-2:]
        if self.delta is not None:
            return tile_perturbation(self.delta.to(images.device, images.dtype), height, width)
        if test_time not in TEST_TIME_MODES:
            raise ValueError(f"test_time must be one of {TEST_TIME_MODES}, got {test_time!r}")
        generator = self.generator.to(images.device)
        if test_time == "tile":
            crop_h, crop_w = (max(GRANULE, s // GRANULE * GRANULE) for s in (height, width))
        else:
            crop_h, crop_w = (math.ceil(s / GRANULE) * GRANULE for s in (height, width))
        source = images[..., : min(crop_h, height), : min(crop_w, width)]
        pad = (0, crop_w - source.shape[-1], 0, crop_h - source.shape[-2])
        if any(pad):
            source = F.pad(source, pad, mode="replicate")
        with torch.no_grad():
            chunks = [generator(chunk) for chunk in source.split(_GENERATOR_CHUNK)]
        delta = torch.cat(chunks) * self.scale
        return tile_perturbation(delta, height, width).to(images.dtype)

    def to(self, device: str | torch.device) -> Perturbation:
        if self.delta is not None:
            self.delta = self.delta.to(device)
        else:
            self.generator.to(device)
        return self

    # -- files ---------------------------------------------------------------------------
    def save(self, stem: str | Path) -> list[Path]:
        """Write the artefact next to ``stem`` (a path without suffix); returns the files written.

        A delta gives ``stem.npy`` (H, W, 3) float32 RGB, ``stem.png`` (CVIU view,
        ``(delta + 0.5) * 255``) and ``stem.json`` (``meta``); a generator gives ``stem.pt``
        (``{"state_dict", "scale", "meta"}``) and ``stem.json``.
        """
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        if self.delta is not None:
            array = self.to_numpy()
            written.append(_atomic(add_suffix(stem, ".npy"), lambda f: np.save(f, array)))
            view = np.clip(np.round((array + 0.5) * 255.0), 0, 255).astype(np.uint8)
            written.append(_atomic(add_suffix(stem, ".png"), lambda f: Image.fromarray(view).save(f, format="PNG")))
        else:
            state = {k: v.detach().cpu() for k, v in self.generator.state_dict().items()}
            payload = {"state_dict": state, "scale": self.scale, "meta": self.meta}
            written.append(_atomic(add_suffix(stem, ".pt"), lambda f: torch.save(payload, f)))
        text = json.dumps({"kind": self.kind, "scale": self.scale, **self.meta}, indent=1, default=str)
        written.append(_atomic(add_suffix(stem, ".json"), lambda f: f.write(text.encode())))
        return written

    @classmethod
    def from_numpy(cls, array: np.ndarray, **kwargs: Any) -> Perturbation:
        """From an (H, W, 3) RGB array (the MSU layout)."""
        array = np.asarray(array)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB perturbation (the MSU layout), got shape {array.shape}")
        delta = torch.from_numpy(np.ascontiguousarray(array.astype(np.float32).transpose(2, 0, 1)))
        return cls(delta=delta, **kwargs)

    @classmethod
    def from_msu_npy(cls, path: str | Path) -> Perturbation:
        """An MSU benchmark perturbation: ``.npy`` (H, W, 3) float32 RGB (within [-0.1, 0.1] for UAPs)."""
        path = Path(path)
        return cls.from_numpy(np.load(path), meta=_sidecar_meta(path, fmt="msu-npy"), path=path)

    @classmethod
    def from_cviu_png(cls, path: str | Path) -> Perturbation:
        """A CVIU paper perturbation PNG: RGB pixels decode as ``png / 255 - 0.5``."""
        path = Path(path)
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        perturbation = cls.from_numpy(pixels / 255.0 - 0.5, meta=_sidecar_meta(path, fmt="cviu-png"), path=path)
        if perturbation.linf > 11 / 255:
            log.warning(
                "%s decodes to values up to %.3f, beyond the 10/255 bound of the CVIU perturbations; "
                "check that it is a perturbation PNG (png / 255 - 0.5) and not a picture",
                path.name,
                perturbation.linf,
            )
        return perturbation

    @classmethod
    def from_generator_file(cls, path: str | Path) -> Perturbation:
        """A generator: a file saved by :meth:`save`, or a bare U-Net state dict (the published
        FACPA generators, output scaled by 10/255)."""
        path = Path(path)
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict):
            raise ValueError(f"{path} is not a generator state dict")
        state = payload.get("state_dict", payload)
        generator = UNetGenerator()
        try:
            generator.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{path} does not hold the U-Net generator of the CNN-based attack (8 down / 8 up, "
                f"64 base channels, modules conv1..conv8 and dconv1..dconv8): {exc}"
            ) from exc
        meta = dict(payload.get("meta", {})) or _sidecar_meta(path, fmt="generator")
        return cls(generator=generator, scale=float(payload.get("scale", 10 / 255)), meta=meta, path=path)


def load_perturbation(path: str | Path) -> Perturbation:
    """Read a perturbation, telling the format from the file.

    - ``.npy``: MSU layout, (H, W, 3) float32 RGB;
    - ``.png`` / ``.bmp`` / ``.jpg``: the CVIU paper's encoding, ``png / 255 - 0.5`` (RGB). The
      MSU code's PNG views (``(uap + 0.1) * 255`` written with OpenCV) are pictures only: use the
      ``.npy`` next to them;
    - ``.pt`` / ``.pth``: a generator (a file saved by :meth:`Perturbation.save`, or a published
      FACPA U-Net state dict).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no perturbation file at {path}; give an MSU .npy, a CVIU .png or a generator .pt")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return Perturbation.from_msu_npy(path)
    if suffix in (".png", ".bmp", ".jpg", ".jpeg"):
        return Perturbation.from_cviu_png(path)
    if suffix in (".pt", ".pth"):
        return Perturbation.from_generator_file(path)
    raise ValueError(f"unknown perturbation format {path.name!r}: expected .npy (MSU), .png (CVIU) or .pt (generator)")


def _sidecar_meta(path: Path, *, fmt: str) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        with contextlib.suppress(ValueError):
            meta = json.loads(sidecar.read_text())
            meta.pop("kind", None)
            meta.pop("scale", None)
            return meta
    return {"format": fmt, "source": str(path)}


def add_suffix(stem: Path, suffix: str) -> Path:
    """``stem`` plus a suffix, keeping any dots already in the name (``uap_run.v2`` -> ``uap_run.v2.npy``)."""
    return stem.with_name(stem.name + suffix)


def _atomic(path: Path, write: Any) -> Path:
    """Write through a temporary file and rename, so a reader never sees half an artefact."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
    tmp.replace(path)
    return path
