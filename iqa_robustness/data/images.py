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
import difflib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
SHARED_ENV_VAR = "IQA_ROBUSTNESS_SHARED"
DATA_ENV_VAR = "IQA_ROBUSTNESS_DATA"
#: the checkout this module runs from, when it runs from one (not from an installed wheel)
_CHECKOUT = Path(__file__).resolve().parents[2]

OnError = Literal["raise", "skip"]
Size = int | tuple[int, int] | None
"""``None``: native size; ``int``: shrink so the longer side is at most this; ``(H, W)``: exact size."""


class UnknownDatasetError(ValueError):
    """A dataset name that is neither registered nor an existing path."""


class DatasetNotFoundError(FileNotFoundError):
    """A known dataset whose files are not where the suite looks for them."""


class ImageReadError(ValueError):
    """One or more image files could not be decoded.

    Attributes:
        bad: image name -> reason, for every file that failed.
    """

    def __init__(self, message: str, bad: dict[str, str]) -> None:
        super().__init__(message)
        self.bad = bad


# --------------------------------------------------------------------------- decoding


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert a Pillow image of any mode to a float32 RGB tensor (3, H, W) in [0, 1].

    See the module docstring for how grayscale, palette, 16-bit and alpha images are converted.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert(mode.upper())
    elif mode not in ("1", "L", "LA", "I", "F", "RGB", "RGBA") and not mode.startswith("I;16"):
        image = image.convert("RGB")

    array = np.asarray(image)
    if array.dtype == np.bool_ or array.dtype.kind == "f":
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    else:  # I;16* (uint16) and I (int32): 16-bit sources, the only integer images Pillow reads as such
        values = array.astype(np.float32) / 65535.0
    values = np.clip(values, 0.0, 1.0)
    if values.ndim == 2:
        values = values[:, :, None]

    channels = values.shape[2]
    if channels in (2, 4):  # LA or RGBA: composite on white
        colour, alpha = values[:, :, :-1], values[:, :, -1:]
        values = colour * alpha + (1.0 - alpha)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))


def target_size(native: tuple[int, int], size: Size) -> tuple[int, int]:
    """The (H, W) an image of native size (H, W) gets under the ``size`` option.

    Args:
        native: (height, width) of the decoded image.
        size: ``None`` keeps the native size; an int shrinks the image (never enlarges it) so that
            its longer side is at most that many pixels, keeping the aspect ratio; ``(H, W)`` is an
            exact size.
    """
    _check_size(size)
    height, width = native
    if size is None:
        return height, width
    if isinstance(size, int):
        longer = max(height, width)
        if longer <= size:
            return height, width
        scale = size / longer
        return max(1, round(height * scale)), max(1, round(width * scale))
    return int(size[0]), int(size[1])


def resize_image(image: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize a (3, H, W) or (N, 3, H, W) tensor under the ``size`` option (bilinear, antialiased)."""
    new = target_size((image.shape[-2], image.shape[-1]), size)
    if new == tuple(image.shape[-2:]):
        return image
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    out = F.interpolate(batch, size=new, mode="bilinear", align_corners=False, antialias=True)
    out = out.clamp_(0.0, 1.0)
    return out if image.ndim == 4 else out[0]


def load_image(path: str | os.PathLike[str], *, size: Size = None) -> torch.Tensor:
    """Decode one image file to a float32 RGB tensor (3, H, W) in [0, 1].

    Raises:
        ImageReadError: the file cannot be decoded; the message names it and what to do.
    """
    path = Path(path)
    return _decode(_open_file, path, str(path), path.name, size)


def _open_file(path: Path) -> Image.Image:
    return Image.open(path)


def _decode(reader: Callable[..., Image.Image], arg: object, source: str, image_name: str, size: Size) -> torch.Tensor:
    try:
        with reader(arg) as image:
            tensor = image_to_tensor(image)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        reason = _reason(exc)
        raise ImageReadError(
            f"cannot read image {source}: {reason}. Replace or remove the file, or load the dataset "
            "with on_error='skip' to leave unreadable images out with a warning.",
            {image_name: reason},
        ) from exc
    return resize_image(tensor, size)


def _listing(bad: dict[str, str]) -> str:
    return "\n".join(f"  {name}: {reason}" for name, reason in bad.items())


def _unreadable_error(summary: str, bad: dict[str, str]) -> ImageReadError:
    return ImageReadError(
        f"{summary}:\n{_listing(bad)}\n"
        "Remove or replace them, or pass on_error='skip' to leave them out with a warning.",
        bad,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_options(max_images: int | None, size: Size, on_error: str) -> None:
    _check_size(size)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")


def _check_size(size: Size) -> None:
    if size is None:
        return
    if isinstance(size, bool):
        raise ValueError(f"size must be None, an int or (height, width), not {size!r}")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size (longest side) must be a positive number of pixels, got {size}")
        return
    if (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return
    raise ValueError(
        f"size must be None (native size), a positive int (longest side) or a pair of positive ints "
        f"(height, width), got {size!r}"
    )


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
    _reader: Callable[..., Image.Image] = dataclasses.field(default=_open_file, repr=False, compare=False)
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
        return _decode(self._reader, self._reader_arg, self.source, self.image_name, self.size)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named, ordered list of lazily loaded images.

    Attributes:
        name: registered name (``sample``, ``msu5``, ...) or the folder's name.
        items: the images, sorted by ``image_name``.
        root: the folder read, or ``None`` for built-in images.
        on_error: what loading does with an image that cannot be decoded: ``"raise"``
            :class:`ImageReadError`, or ``"skip"`` it with a logged warning.
        skipped: names of files left out when the dataset was opened (``on_error="skip"``).
    """

    name: str
    items: tuple[ImageItem, ...] = dataclasses.field(repr=False)
    root: Path | None = None
    on_error: OnError = "raise"
    skipped: tuple[str, ...] = dataclasses.field(default=(), repr=False)

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
            raise _unreadable_error(f"{len(bad)} image(s) of dataset {self.name!r} could not be decoded", bad)
        log.warning("dataset %s: skipping %d undecodable image(s):\n%s", self.name, len(bad), _listing(bad))
        kept = tuple(item for item in self.items if item.image_name not in bad)
        return dataclasses.replace(self, items=kept, skipped=self.skipped + tuple(bad))


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
    _check_options(max_images, size, on_error)
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
            bad[image_name] = _reason(exc)
            continue
        items.append(ImageItem(image_name, str(path), path=path, size=size, native_size=native, _reader_arg=path))

    if bad:
        if on_error == "raise":
            raise _unreadable_error(f"{len(bad)} file(s) in {root} could not be read as images", bad)
        log.warning(
            "dataset %s: skipping %d unreadable file(s) in %s:\n%s",
            name or root_name,
            len(bad),
            root,
            _listing(bad),
        )
    if not items:
        raise ImageReadError(f"no readable image in {root}: every candidate file failed to decode", bad)
    return Dataset(
        name=name or root_name,
        items=tuple(items),
        root=root,
        on_error=on_error,
        skipped=tuple(bad),
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


def _has_images(folder: Path) -> bool:
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
    _check_options(max_images, size, on_error)
    items = tuple(
        ImageItem(name, f"skimage.data.{function}", size=size, _reader=_open_skimage, _reader_arg=(function, index))
        for name, function, index in sorted(_SAMPLE_IMAGES)
    )
    return Dataset(name="sample", items=items[:max_images], root=None, on_error=on_error)


# --------------------------------------------------------------------------- named datasets


def shared_folder() -> Path:
    """The reference folder: ``$IQA_ROBUSTNESS_SHARED``, else ``shared/`` beside the checkout (an
    installed wheel has no checkout: then beside the current folder)."""
    if os.environ.get(SHARED_ENV_VAR):
        return Path(os.environ[SHARED_ENV_VAR]).expanduser()
    base = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
    return base.parent / "shared"


def env_roots(name: str, env_var: str) -> list[Path]:
    """Where a named dataset may be: ``$<env_var>``, then ``$IQA_ROBUSTNESS_DATA/<name>`` (those set)."""
    roots = []
    if os.environ.get(env_var):
        roots.append(Path(os.environ[env_var]).expanduser())
    if os.environ.get(DATA_ENV_VAR):
        roots.append(Path(os.environ[DATA_ENV_VAR]).expanduser() / name)
    return roots


@dataclasses.dataclass(frozen=True)
class EnvFolder:
    """Locates a named dataset's folder from an environment variable or the data root.

    Looks at ``$<env_var>``, then ``$IQA_ROBUSTNESS_DATA/<name>``; in each, at the folder itself and
    then at each of ``layouts`` (subfolders of a dataset's usual layout, e.g. ``JPEGImages``).
    """

    name: str
    env_var: str
    layouts: tuple[str, ...] = ()

    def __call__(self) -> Path:
        roots = env_roots(self.name, self.env_var)
        for root in roots:
            for folder in (root, *(root / layout for layout in self.layouts)):
                if _has_images(folder):
                    return folder
        if roots:
            where = f"no images in {', '.join(str(r) for r in roots)}"
        else:
            where = f"neither {self.env_var} nor {DATA_ENV_VAR} is set"
        inside = " or ".join(f"{layout}/" for layout in self.layouts)
        layouts = f" (or to a folder with {inside} inside)" if self.layouts else ""
        raise DatasetNotFoundError(
            f"dataset {self.name!r} not found: {where}. Set {self.env_var} to the folder holding its "
            f"images{layouts}, or {DATA_ENV_VAR} to a folder containing {self.name}/, or pass the "
            "folder's path instead of the name."
        )


@dataclasses.dataclass(frozen=True)
class _SharedFolder:
    name: str
    relative: str

    def __call__(self) -> Path:
        folder = shared_folder() / self.relative
        if not _has_images(folder):
            raise DatasetNotFoundError(
                f"dataset {self.name!r} needs the benchmark's reference folder: {folder} not found or "
                f"empty; set {SHARED_ENV_VAR} to the folder that holds {self.relative}"
            )
        return folder


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: ``locate()`` returns its folder; ``None`` for the built-in sample set."""

    name: str
    description: str
    locate: Callable[[], Path] | None


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, locate: Callable[[], Path], *, description: str = "", replace: bool = False) -> None:
    """Register a named folder dataset.

    Args:
        name: the name (case-insensitive) accepted by :func:`resolve_dataset`.
        locate: returns the folder of images, or raises :class:`DatasetNotFoundError` saying how
            to provide it (:class:`EnvFolder` does this from an environment variable).
        description: one line for listings.
        replace: allow re-registering an existing name.
    """
    key = name.strip().lower()
    if key in _REGISTRY and not replace:
        raise ValueError(f"dataset {key!r} is already registered; pass replace=True to override it")
    _REGISTRY[key] = DatasetInfo(key, description, locate)


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registration of a named dataset (raises :class:`UnknownDatasetError` with suggestions)."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise UnknownDatasetError(_unknown_message(name))
    return _REGISTRY[key]


def _env_var_for(name: str) -> str:
    return "IQA_ROBUSTNESS_" + re.sub(r"[^0-9A-Za-z]+", "_", name).upper()


_REGISTRY["sample"] = DatasetInfo("sample", "8 real photographs bundled with scikit-image (offline, no download)", None)
register_dataset(
    "msu5",
    _SharedFolder("msu5", "data/msu/test_images"),
    description=f"the benchmark's 5-image test set (NIPS 2017 dev, 299x299) from ${SHARED_ENV_VAR}",
)
register_dataset(
    "nips2017",
    EnvFolder("nips2017", _env_var_for("nips2017"), ("images",)),
    description="NIPS 2017 Adversarial Learning dev set (299x299 PNGs): the benchmark's test set",
)
register_dataset(
    "coco",
    EnvFolder("coco", _env_var_for("coco"), ("train2017", "train2014")),
    description="MS COCO images: a training set for universal attacks",
)
register_dataset(
    "voc2012",
    EnvFolder(
        "voc2012",
        _env_var_for("voc2012"),
        ("JPEGImages", "VOC2012/JPEGImages", "VOCdevkit/VOC2012/JPEGImages"),
    ),
    description="Pascal VOC 2012 JPEGImages: a training set for universal attacks",
)


def _data_root_folders() -> list[str]:
    root = os.environ.get(DATA_ENV_VAR)
    if not root or not Path(root).expanduser().is_dir():
        return []
    return sorted(p.name for p in Path(root).expanduser().iterdir() if p.is_dir())


def _unknown_message(spec: str) -> str:
    candidates = list(_REGISTRY) + _data_root_folders()
    close = difflib.get_close_matches(spec.strip().lower(), candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    return (
        f"unknown dataset {spec!r}{hint} Known names: {', '.join(list_datasets())}. "
        "A path to a folder of images (png, jpg, jpeg, bmp) is accepted as well."
    )


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith((".", "~")) or Path(spec).exists()


def resolve_dataset(
    spec: str | os.PathLike[str] | Dataset,
    *,
    max_images: int | None = None,
    size: Size = None,
    on_error: OnError = "raise",
    recursive: bool = False,
) -> Dataset:
    """Open a dataset from a registered name or a filesystem path.

    Names (case-insensitive) win over a same-named folder in the working directory; write
    ``./name`` to mean the folder. A name that is not registered but is a subfolder of
    ``$IQA_ROBUSTNESS_DATA`` opens that subfolder.

    Args:
        spec: ``sample``, ``msu5``, ``nips2017``, ``coco``, ``voc2012`` (see :func:`list_datasets`),
            a folder of images, one image file, or an already opened :class:`Dataset` (returned as is).
        max_images: keep the first N images after sorting by name.
        size: ``None`` native size, an int for the longest side, or an exact ``(H, W)``.
        on_error: ``"raise"`` or ``"skip"`` unreadable images (see :func:`folder_dataset`).
        recursive: read subfolders too (folder datasets only).

    Raises:
        UnknownDatasetError: neither a registered name nor an existing path ("did you mean").
        DatasetNotFoundError: a registered dataset whose folder is missing (says how to provide it).
        ImageReadError: unreadable image files.
    """
    if isinstance(spec, Dataset):
        return spec
    options = {"max_images": max_images, "size": size, "on_error": on_error}
    if isinstance(spec, os.PathLike):
        return folder_dataset(spec, recursive=recursive, **options)
    key = spec.strip().lower()
    if key in _REGISTRY:
        info = _REGISTRY[key]
        if info.locate is None:
            return sample_dataset(**options)
        return folder_dataset(info.locate(), name=key, recursive=recursive, **options)
    if _looks_like_path(spec):
        return folder_dataset(spec, recursive=recursive, **options)
    data_root = os.environ.get(DATA_ENV_VAR)
    if data_root and (Path(data_root).expanduser() / spec).is_dir():
        return folder_dataset(Path(data_root).expanduser() / spec, name=spec, recursive=recursive, **options)
    raise UnknownDatasetError(_unknown_message(spec))
