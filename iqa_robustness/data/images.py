"""Image datasets: named sets and folders, decoded to float RGB tensors, grouped into equal-size batches.

The benchmark (Antsiferova et al., "Comparing the robustness of modern no-reference image- and
video-quality metrics to adversarial attacks", AAAI 2024) tests on the NIPS 2017 Adversarial
Learning dev set and trains universal perturbations on COCO and Pascal VOC 2012; the user points
the suite at those folders. Two sets need no download: ``sample``, real photographs bundled with
scikit-image, and ``msu5``, the benchmark's 5-image test set in the reference folder.

Decoding (Pillow) gives a float32 tensor (3, H, W), RGB, in [0, 1]:

- grayscale (``1``, ``L``, ``I``, ``I;16``, ``F``) is repeated over the three channels, with
  16-bit and 32-bit integer pixels scaled by 65535 (``F`` is taken as already in [0, 1]), so no
  precision is lost to an 8-bit round trip;
- palette images go through their palette (RGBA when the palette has transparency);
- **alpha is composited on white** (``rgb * a + (1 - a)``): the image a viewer sees, not the colour
  data hidden under transparent pixels. Loaders that drop alpha (``cv2.imread``, Pillow's
  ``convert("RGB")``) can give other pixels where alpha < 1; the benchmark's own sets have no alpha;
- every other mode (CMYK, YCbCr, LAB, ...) is converted with Pillow's ``convert("RGB")``;
- EXIF orientation is not applied (pixels as stored, as in Pillow and the reference code);
- 16-bit RGB PNGs are reduced to 8 bits per channel by Pillow.

File names are sorted as strings (Python's ``sorted``), so ``max_images=N`` always takes the same
N images. Files whose extension is not png/jpg/jpeg/bmp (any case), and hidden files such as
macOS ``._name.png`` companions, are not part of a folder dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqa_robustness.data.decode import (
    IMAGE_EXTENSIONS,
    OnError,
    Size,
    check_dataset_options,
    decode_item,
    list_bad,
    open_file,
    reason_of,
    target_size,
    unreadable_error,
)
from iqa_robustness.data.errors import DatasetNotFoundError, ImageReadError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- items and datasets


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image of a dataset, decoded only when :meth:`load` is called.

    Attributes:
        image_name: the name used in result rows (file name relative to the dataset folder).
        source: where the pixels come from (a file path, or ``skimage.data.<function>``).
        path: the file, for images read from disk.
        size: the dataset's ``size`` option, applied by :meth:`load`.
        native_size: (H, W) of the stored image when known without decoding.
    """

    image_name: str
    source: str
    path: Path | None = None
    size: Size = None
    native_size: tuple[int, int] | None = None
    _reader: Callable[..., Image.Image] = dataclasses.field(default=open_file, repr=False, compare=False)
    _reader_arg: object = dataclasses.field(default=None, repr=False, compare=False)

    @functools.cached_property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the tensor :meth:`load` returns."""
        native = self.native_size
        if native is None:
            with self._reader(self._reader_arg) as image:
                native = (image.height, image.width)
        return target_size(native, self.size)

    def load(self) -> torch.Tensor:
        """Decode (and resize) the image: float32 RGB tensor (3, H, W) in [0, 1].

        Raises:
            ImageReadError: the pixels cannot be decoded (e.g. a truncated file).
        """
        return decode_item(self._reader, self._reader_arg, self.source, self.image_name, self.size)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named, ordered list of lazily loaded images.

    Attributes:
        name: registered name (``sample``, ``msu5``, ...) or the folder's name.
        items: the images, sorted by ``image_name``.
        root: the folder read, or ``None`` for built-in images.
        on_error: what loading does with an image that cannot be decoded: ``"raise"``
            :class:`ImageReadError`, or ``"skip"`` it with a logged warning.
        skip_reasons: name -> why, for every file left out when the dataset was opened or
            :meth:`checked` (``on_error="skip"``); :attr:`skipped` lists the names.
    """

    name: str
    items: tuple[ImageItem, ...] = dataclasses.field(repr=False)
    root: Path | None = None
    on_error: OnError = "raise"
    skip_reasons: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def skipped(self) -> tuple[str, ...]:
        """Names of the files left out (``on_error="skip"``), in the order they were found."""
        return tuple(self.skip_reasons)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ImageItem]:
        return iter(self.items)

    def __getitem__(self, index: int) -> ImageItem:
        return self.items[index]

    @property
    def image_names(self) -> list[str]:
        return [item.image_name for item in self.items]

    def load(self, item: ImageItem) -> torch.Tensor | None:
        """Decode one item, or return ``None`` (with a warning) when it fails and ``on_error="skip"``."""
        try:
            return item.load()
        except ImageReadError as exc:
            if self.on_error != "skip":
                raise
            log.warning("dataset %s: skipping %s (%s)", self.name, item.image_name, exc.bad[item.image_name])
            return None

    def images(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(image_name, tensor (3, H, W))`` one image at a time, in dataset order."""
        for item in self.items:
            tensor = self.load(item)
            if tensor is not None:
                yield item.image_name, tensor

    def checked(self) -> Dataset:
        """Decode every image once, to find damage that file headers do not show (a truncated JPEG).

        Returns:
            This dataset when all images decode; with ``on_error="skip"``, a copy without the
            failures (logged as a warning).

        Raises:
            ImageReadError: with ``on_error="raise"``, one error naming every failing image.
        """
        bad: dict[str, str] = {}
        for item in self.items:
            try:
                item.load()
            except ImageReadError as exc:
                bad.update(exc.bad)
        if not bad:
            return self
        if self.on_error != "skip":
            raise unreadable_error(f"{len(bad)} image(s) of dataset {self.name!r} could not be decoded", bad)
        log.warning("dataset %s: skipping %d undecodable image(s):\n%s", self.name, len(bad), list_bad(bad))
        kept = tuple(item for item in self.items if item.image_name not in bad)
        return dataclasses.replace(self, items=kept, skip_reasons={**self.skip_reasons, **bad})


def iter_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Yield ``(image_names, batch (B, 3, H, W))`` with every image of a batch the same size.

    Images are grouped by their size after the dataset's ``size`` option; each group, in dataset
    order, is cut into batches of at most ``batch_size``; batches come in the order of their first
    image in the dataset. Sizes are read from file headers, so nothing is decoded twice. An image
    that fails to decode is skipped (``on_error="skip"``, the batch is then smaller) or raises.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, item in enumerate(dataset.items):
        groups.setdefault(item.shape, []).append(index)
    plan = [
        indices[start : start + batch_size]
        for indices in groups.values()
        for start in range(0, len(indices), batch_size)
    ]
    plan.sort(key=lambda chunk: chunk[0])
    for chunk in plan:
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        for index in chunk:
            item = dataset.items[index]
            tensor = dataset.load(item)
            if tensor is not None:
                names.append(item.image_name)
                tensors.append(tensor)
        if tensors:
            yield names, torch.stack(tensors)


# --------------------------------------------------------------------------- folders


def folder_dataset(
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_images: int | None = None,
    size: Size = None,
    on_error: OnError = "raise",
    recursive: bool = False,
) -> Dataset:
    """Open a folder of images (or a single image file) as a dataset.

    Every file is opened once to read its size and verify its structure (no full decode), so that
    all unreadable files are reported together. Damage that only decoding reveals (a truncated
    JPEG) is reported when the image is loaded.

    Args:
        folder: the folder (or one image file).
        name: dataset name; default the folder's name.
        max_images: keep only the first N images after sorting by name (with ``on_error="skip"``,
            the first N readable ones).
        size: see :func:`target_size`; default native size.
        on_error: ``"raise"`` (default): one :class:`ImageReadError` naming every unreadable file;
            ``"skip"``: leave them out with a logged warning.
        recursive: also read images in subfolders (names are then relative paths, ``a/b.png``).

    Raises:
        DatasetNotFoundError: the folder does not exist.
        ImageReadError: unreadable files (``on_error="raise"``) or no readable image at all.
    """
    check_dataset_options(max_images, size, on_error)
    root = Path(folder).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"no such folder: {root}; pass an existing folder of images")
    if root.is_file():
        files = [(root.name, root)]
        root_name = root.stem
    else:
        files = _image_files(root, recursive)
        root_name = root.name
    if not files:
        raise ImageReadError(_no_images_message(root, recursive), {})

    items: list[ImageItem] = []
    bad: dict[str, str] = {}
    for image_name, path in files:
        # raise: the first N files (all of their failures reported); skip: the first N readable ones
        taken = len(items) if on_error == "skip" else len(items) + len(bad)
        if max_images is not None and taken >= max_images:
            break
        try:
            native = _probe(path)
        except Exception as exc:  # Pillow raises a zoo of exception types for damaged files
            bad[image_name] = reason_of(exc)
            continue
        items.append(ImageItem(image_name, str(path), path=path, size=size, native_size=native, _reader_arg=path))

    if bad:
        if on_error == "raise":
            raise unreadable_error(f"{len(bad)} file(s) in {root} could not be read as images", bad)
        log.warning(
            "dataset %s: skipping %d unreadable file(s) in %s:\n%s",
            name or root_name,
            len(bad),
            root,
            list_bad(bad),
        )
    if not items:
        raise ImageReadError(f"no readable image in {root}: every candidate file failed:\n{list_bad(bad)}", bad)
    return Dataset(
        name=name or root_name,
        items=tuple(items),
        root=root,
        on_error=on_error,
        skip_reasons=bad,
    )


def _image_files(root: Path, recursive: bool) -> list[tuple[str, Path]]:
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = []
    for path in candidates:
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            files.append((relative.as_posix(), path))
    return sorted(files)


def has_images(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") for p in folder.iterdir()
    )


def _no_images_message(root: Path, recursive: bool) -> str:
    extensions = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    message = f"no images ({extensions}) found in {root}"
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders and not recursive:
        shown = ", ".join(subfolders[:5]) + (", ..." if len(subfolders) > 5 else "")
        message += f"; it has subfolders ({shown}): point at one of them, or pass recursive=True"
    return message


def _probe(path: Path) -> tuple[int, int]:
    """(H, W) from the header, after Pillow's structural check (CRCs of PNG chunks, ...)."""
    with Image.open(path) as image:
        height, width = image.height, image.width
        image.verify()
    return height, width


# --------------------------------------------------------------------------- built-in sample set

# Real RGB photographs shipped inside the scikit-image wheel (no pooch download needed):
# (image_name, skimage.data function, index into a tuple result).
_SAMPLE_IMAGES: tuple[tuple[str, str, int | None], ...] = (
    ("astronaut.png", "astronaut", None),
    ("chelsea.png", "chelsea", None),
    ("coffee.png", "coffee", None),
    ("hubble_deep_field.jpg", "hubble_deep_field", None),
    ("immunohistochemistry.png", "immunohistochemistry", None),
    ("motorcycle_left.png", "stereo_motorcycle", 0),
    ("motorcycle_right.png", "stereo_motorcycle", 1),
    ("rocket.jpg", "rocket", None),
)


def _open_skimage(spec: tuple[str, int | None]) -> Image.Image:
    import skimage.data

    function, index = spec
    array = getattr(skimage.data, function)()
    if index is not None:
        array = array[index]
    return Image.fromarray(np.asarray(array))


def sample_dataset(*, max_images: int | None = None, size: Size = None, on_error: OnError = "raise") -> Dataset:
    """Eight real photographs bundled with scikit-image (astronaut, cat, coffee, Hubble deep field,
    immunohistochemistry, motorcycle stereo pair, rocket), 300x451 to 872x1000; read offline."""
    check_dataset_options(max_images, size, on_error)
    items = tuple(
        ImageItem(name, f"skimage.data.{function}", size=size, _reader=_open_skimage, _reader_arg=(function, index))
        for name, function, index in sorted(_SAMPLE_IMAGES)
    )
    return Dataset(name="sample", items=items[:max_images], root=None, on_error=on_error)
