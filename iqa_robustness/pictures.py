"""Pictures of a case for people: clean | adversarial pairs, perturbations made visible, score captions.

A pair file (``pair_<image>.png``, written by the runner) is the clean and the adversarial image
side by side, lossless, so anything shown later (the HTML report, the captioned copies logged to
MLflow) is computed from the exact pixels the metric scored. numpy and PIL only: the report and
the tracking layer use this without importing torch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def read_pair(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The clean and adversarial halves of a pair file as float (H, W, 3) arrays in [0, 1].

    Raises:
        ValueError: the image is not two halves side by side (odd width).
        OSError: the file cannot be read as an image.
    """
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    height, width = pixels.shape[:2]
    if width < 2 or width % 2:
        raise ValueError(f"{path}: a pair is clean | adversarial side by side (even width), got {width}x{height}")
    return pixels[:, : width // 2], pixels[:, width // 2 :]


def amplified(delta: np.ndarray) -> tuple[np.ndarray, float]:
    """``0.5 + delta * k`` clipped to [0, 1], with ``k`` mapping the largest ``|delta|`` to 0.5.

    Returns:
        The visible perturbation and the factor ``k``.
    """
    peak = float(np.max(np.abs(delta))) if delta.size else 0.0
    k = 0.5 / peak if peak > 0 else 1.0
    return np.clip(0.5 + delta * k, 0.0, 1.0), k


def to_image(array: np.ndarray) -> Image.Image:
    """A float (H, W, 3) array in [0, 1] as an 8-bit RGB image."""
    return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def captioned_pair(path: str | Path, caption: list[str], min_width: int = 360) -> Image.Image:
    """Clean | adversarial | perturbation (amplified) side by side, with caption lines below.

    Small images are enlarged (nearest neighbour, so pixels stay pixels) until the strip is at
    least ``min_width`` wide, so the caption stays readable.

    Args:
        path: a pair file.
        caption: lines of text; a last line naming the amplification factor is added.
    """
    clean, adversarial = read_pair(path)
    view, k = amplified(adversarial - clean)
    strip = to_image(np.concatenate([clean, adversarial, view], axis=1))
    if strip.width < min_width:
        factor = -(-min_width // strip.width)
        strip = strip.resize((strip.width * factor, strip.height * factor), Image.Resampling.NEAREST)
    lines = [*caption, f"left to right: clean | adversarial | perturbation x{k:.3g} around grey"]
    size = max(11, min(16, strip.width // 45))
    font = _font(size)
    line_height = size + 4
    out = Image.new("RGB", (strip.width, strip.height + line_height * len(lines) + 6), "white")
    out.paste(strip, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, strip.height + 3 + i * line_height), line, fill="black", font=font)
    return out


_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|bmp|tiff?|webp|gif)$", re.IGNORECASE)


def pair_stem(name: str) -> str:
    """An input's name as a file stem: an image file's extension dropped, folders joined by ``_``.

    ``a.png`` -> ``a``; ``a.png-jpeg30`` (a JPEG copy) -> ``a.png-jpeg30``; ``00001/0266`` -> ``00001_0266``.
    """
    return _IMAGE_SUFFIX.sub("", name).replace("/", "_")


def pair_file_name(name: str) -> str:
    """The file a case's pair of input ``name`` (an image, a JPEG copy, or ``<clip>_f<frame>``) is saved as."""
    return f"pair_{pair_stem(name)}.png"


def pair_of_row(image_name: str, pair_name: str) -> bool:
    """Whether the pair file ``pair_name`` shows the input of a per-image row named ``image_name``.

    An image's pair is ``pair_<stem>.png``; a clip's are ``pair_<clip, '/' as '_'>_f<frame>.png``.
    """
    stem = pair_name.removeprefix("pair_").removesuffix(".png")
    own = pair_stem(image_name)
    return stem == own or re.fullmatch(re.escape(own) + r"_f\d+", stem) is not None
