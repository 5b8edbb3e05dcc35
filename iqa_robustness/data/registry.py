"""One registry of named datasets, image sets and video sets alike, and the resolution of names and paths.

Named sets (``iqa-robustness list datasets``), each with its kind:

- images: ``sample`` (8 photographs bundled with scikit-image, offline), ``msu5`` (the
  benchmark's 5 test images, from the reference folder ``$IQA_ROBUSTNESS_SHARED``), ``nips2017``
  (the benchmark's test set), ``coco`` and ``voc2012`` (its universal-attack training sets);
- clips: ``sample-clips`` (offline), ``vimeo`` / ``vimeo-train`` (Vimeo-90k's test and train
  lists), ``blue-sky`` (Derf's y4m).

A named set on disk is found by one locator (:class:`EnvLocator`): ``$IQA_ROBUSTNESS_<NAME>`` (or
the variable the set names), then ``$IQA_ROBUSTNESS_DATA/<name>``; its error says which variable
to set. Names win over a same-named folder in the working directory (write ``./name`` for the
folder); a name that is not registered but is a subfolder of ``$IQA_ROBUSTNESS_DATA`` opens that
subfolder. Any path works too: a video file or a folder of clips is a video set (see
:mod:`iqa_robustness.data.video_sets`), any other folder or image file an image set.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from iqa_robustness.data.decode import Size
from iqa_robustness.data.errors import DatasetNotFoundError, UnknownDatasetError
from iqa_robustness.data.images import Dataset, OnError, folder_dataset, has_images, sample_dataset
from iqa_robustness.data.video_sets import VideoDataset, clips_from, is_clip_folder, is_video_file, sample_clips
from iqa_robustness.registry import Registry

SHARED_ENV_VAR = "IQA_ROBUSTNESS_SHARED"
DATA_ENV_VAR = "IQA_ROBUSTNESS_DATA"
#: the checkout this module runs from, when it runs from one (not from an installed wheel)
_CHECKOUT = Path(__file__).resolve().parents[2]

Kind = Literal["images", "clips"]


def shared_folder() -> Path:
    """The reference folder: ``$IQA_ROBUSTNESS_SHARED``, else ``shared/`` beside the checkout (an
    installed wheel has no checkout: then beside the current folder)."""
    if os.environ.get(SHARED_ENV_VAR):
        return Path(os.environ[SHARED_ENV_VAR]).expanduser()
    base = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
    return base.parent / "shared"


def env_var_for(name: str) -> str:
    """``IQA_ROBUSTNESS_<NAME>``: the variable that points at a named set's files."""
    return "IQA_ROBUSTNESS_" + re.sub(r"[^0-9A-Za-z]+", "_", name).upper()


# --------------------------------------------------------------------------- locating files


@dataclasses.dataclass(frozen=True)
class EnvLocator:
    """Finds a named set's files through ``$<env_var>``, then ``$IQA_ROBUSTNESS_DATA/<name>``.

    Attributes:
        name: the set's folder name under ``$IQA_ROBUSTNESS_DATA``.
        env_var: the set's own variable.
        accept: given a candidate root, the usable path inside it (or the root itself), else None.
        wants: what the variable should point at, for the error message.
    """

    name: str
    env_var: str
    accept: Callable[[Path], Path | None]
    wants: str

    def roots(self) -> list[Path]:
        roots = []
        if os.environ.get(self.env_var):
            roots.append(Path(os.environ[self.env_var]).expanduser())
        if os.environ.get(DATA_ENV_VAR):
            roots.append(Path(os.environ[DATA_ENV_VAR]).expanduser() / self.name)
        return roots

    def __call__(self) -> Path:
        roots = self.roots()
        for root in roots:
            found = self.accept(root)
            if found is not None:
                return found
        where = (
            f"nothing usable at {', '.join(map(str, roots))}"
            if roots
            else f"neither {self.env_var} nor {DATA_ENV_VAR} is set"
        )
        raise DatasetNotFoundError(
            f"dataset {self.name!r} not found: {where}. Set {self.env_var} to {self.wants}, or {DATA_ENV_VAR} "
            f"to a folder containing {self.name}/, or pass the path instead of the name."
        )


def image_folder(*layouts: str) -> Callable[[Path], Path | None]:
    """Accept a root holding images, or one of its usual subfolders (``JPEGImages``, ...)."""

    def accept(root: Path) -> Path | None:
        return next((f for f in (root, *(root / layout for layout in layouts)) if has_images(f)), None)

    return accept


def clip_source(file_glob: str | None = None) -> Callable[[Path], Path | None]:
    """Accept a video file, a folder of clips (or a Vimeo-90k root), or a folder holding a matching file."""

    def accept(root: Path) -> Path | None:
        found = sorted(root.glob(file_glob)) if file_glob and root.is_dir() else []
        if found:
            return found[0]
        return root if is_video_file(root) or is_clip_folder(root) else None

    return accept


@dataclasses.dataclass(frozen=True)
class SharedLocator:
    """A set inside the benchmark's reference folder (``$IQA_ROBUSTNESS_SHARED``)."""

    name: str
    relative: str

    def __call__(self) -> Path:
        folder = shared_folder() / self.relative
        if not has_images(folder):
            raise DatasetNotFoundError(
                f"dataset {self.name!r} needs the benchmark's reference folder: {folder} not found or "
                f"empty; set {SHARED_ENV_VAR} to the folder that holds {self.relative}"
            )
        return folder


# --------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class Options:
    """How much of a set to read: the first N images (clips of a video set), N frames a clip, the size."""

    max_images: int | None = None
    max_frames: int | None = None
    size: Size = None
    on_error: OnError = "raise"
    recursive: bool = False


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its kind, one line for listings, and how it opens."""

    name: str
    kind: Kind
    description: str
    open: Callable[[Options], Dataset | VideoDataset]


def _data_root_folders() -> list[str]:
    root = os.environ.get(DATA_ENV_VAR)
    if not root or not Path(root).expanduser().is_dir():
        return []
    return sorted(p.name for p in Path(root).expanduser().iterdir() if p.is_dir())


DATASETS: Registry[DatasetInfo] = Registry(
    "dataset",
    error=UnknownDatasetError,
    hint=lambda: f"known names: {', '.join(DATASETS.names())}; a path to a folder, image or video works too",
    candidates=_data_root_folders,
)


def register_dataset(
    name: str,
    locate: Callable[[], Path],
    *,
    description: str = "",
    kind: Kind = "images",
    replace: bool = False,
) -> None:
    """Register a named set whose files ``locate()`` finds (or raises :class:`DatasetNotFoundError` saying how).

    Args:
        name: the name (case-insensitive) accepted by :func:`resolve_dataset` and ``--dataset``.
        locate: returns the folder of images (``kind="images"``) or the video file / clip folder
            (``kind="clips"``); :class:`EnvLocator` does this from an environment variable.
        description: one line for listings.
        kind: ``images`` or ``clips``.
        replace: allow re-registering an existing name.
    """
    key = name.strip().lower()
    if kind == "images":

        def open_set(o: Options) -> Dataset | VideoDataset:
            return folder_dataset(
                locate(), name=key, max_images=o.max_images, size=o.size, on_error=o.on_error, recursive=o.recursive
            )
    else:
        split = "train" if key.endswith("-train") else "test"

        def open_set(o: Options) -> Dataset | VideoDataset:
            root = locate()
            clips = clips_from(root, max_clips=o.max_images, max_frames=o.max_frames, size=o.size, split=split)
            return VideoDataset(key, clips, root)

    DATASETS.register(key, DatasetInfo(key, kind, description, open_set), replace=replace)


def list_datasets(kind: Kind | None = None) -> list[str]:
    """Registered dataset names, sorted; ``kind`` keeps image sets or video sets only."""
    return [n for n, info in DATASETS.items() if kind is None or info.kind == kind]


def dataset_info(name: str) -> DatasetInfo:
    """The registration of a named dataset (raises :class:`UnknownDatasetError` with suggestions)."""
    return DATASETS[name]


DATASETS.register(
    "sample",
    DatasetInfo(
        "sample",
        "images",
        "8 real photographs bundled with scikit-image (offline, no download)",
        lambda o: sample_dataset(max_images=o.max_images, size=o.size, on_error=o.on_error),
    ),
)
DATASETS.register(
    "sample-clips",
    DatasetInfo(
        "sample-clips",
        "clips",
        "3 clips of 16 frames panning across bundled photographs (offline, no download)",
        lambda o: sample_clips(max_clips=o.max_images, max_frames=o.max_frames, size=o.size),
    ),
)
register_dataset(
    "msu5",
    SharedLocator("msu5", "data/msu/test_images"),
    description=f"the benchmark's 5-image test set (NIPS 2017 dev, 299x299) from ${SHARED_ENV_VAR}",
)
register_dataset(
    "nips2017",
    EnvLocator(
        "nips2017", env_var_for("nips2017"), image_folder("images"), "the folder holding its images (or images/)"
    ),
    description="NIPS 2017 Adversarial Learning dev set (299x299 PNGs): the benchmark's test set",
)
register_dataset(
    "coco",
    EnvLocator("coco", env_var_for("coco"), image_folder("train2017", "train2014"), "the folder holding its images"),
    description="MS COCO images: a training set for universal attacks",
)
register_dataset(
    "voc2012",
    EnvLocator(
        "voc2012",
        env_var_for("voc2012"),
        image_folder("JPEGImages", "VOC2012/JPEGImages", "VOCdevkit/VOC2012/JPEGImages"),
        "the folder holding its images (or JPEGImages/ inside)",
    ),
    description="Pascal VOC 2012 JPEGImages: a training set for universal attacks",
)
_VIMEO = EnvLocator("vimeo", "IQA_ROBUSTNESS_VIMEO", clip_source(), "the folder holding sequences/")
register_dataset(
    "vimeo", _VIMEO, kind="clips", description="Vimeo-90k triplets/septuplets (448x256), the test list when present"
)
register_dataset(
    "vimeo-train",
    _VIMEO,
    kind="clips",
    description="Vimeo-90k, the clips of its train list: a training set for universal attacks (frames)",
)
register_dataset(
    "blue-sky",
    EnvLocator("blue-sky", "IQA_ROBUSTNESS_BLUE_SKY", clip_source("blue_sky*.y4m"), "its y4m file or its folder"),
    kind="clips",
    description="Derf's blue_sky (1920x1080, 250 frames, y4m)",
)


# --------------------------------------------------------------------------- names and paths


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith((".", "~")) or Path(spec).exists()


def is_video_dataset(spec: str | os.PathLike[str] | Dataset | VideoDataset) -> bool:
    """Whether ``spec`` names clips (a registered video set, a video file, a folder of clips)."""
    if isinstance(spec, (Dataset, VideoDataset)):
        return isinstance(spec, VideoDataset)
    text = str(spec).strip()
    if text in DATASETS:
        return DATASETS[text].kind == "clips"
    path = Path(text).expanduser()
    return is_video_file(path) or is_clip_folder(path)


def resolve_any_dataset(
    spec: str | os.PathLike[str] | Dataset | VideoDataset,
    *,
    max_images: int | None = None,
    max_frames: int | None = None,
    size: Size = None,
    on_error: OnError = "raise",
    recursive: bool = False,
) -> Dataset | VideoDataset:
    """Open a dataset by name or path: a :class:`VideoDataset` when it names clips, else a :class:`Dataset`.

    ``max_images`` limits the images of an image set and the clips of a video set.

    Raises:
        UnknownDatasetError: neither a registered name nor an existing path ("did you mean").
        DatasetNotFoundError: a registered dataset whose files are missing (says how to provide them).
        ImageReadError: unreadable image files.
    """
    if isinstance(spec, (Dataset, VideoDataset)):
        return spec
    options = Options(max_images, max_frames, size, on_error, recursive)
    text = str(spec).strip()
    if not isinstance(spec, os.PathLike) and text in DATASETS:
        return DATASETS[text].open(options)
    path = Path(text).expanduser()
    if is_video_file(path) or is_clip_folder(path):
        clips = clips_from(path, max_clips=max_images, max_frames=max_frames, size=size)
        return VideoDataset(path.stem if path.is_file() else path.name, clips, path)
    if isinstance(spec, os.PathLike) or _looks_like_path(text):
        return folder_dataset(path, max_images=max_images, size=size, on_error=on_error, recursive=recursive)
    data_root = os.environ.get(DATA_ENV_VAR)
    if data_root and (Path(data_root).expanduser() / text).is_dir():
        folder = Path(data_root).expanduser() / text
        return folder_dataset(
            folder, name=text, max_images=max_images, size=size, on_error=on_error, recursive=recursive
        )
    raise UnknownDatasetError(DATASETS.unknown_message(text))


def resolve_dataset(
    spec: str | os.PathLike[str] | Dataset,
    *,
    max_images: int | None = None,
    size: Size = None,
    on_error: OnError = "raise",
    recursive: bool = False,
) -> Dataset:
    """An image dataset by name or path (a video set gives its frames, named ``<clip>/<frame>``).

    Args:
        spec: a registered name (:func:`list_datasets`), a folder of images, one image file, or an
            already opened :class:`Dataset` (returned as is).
        max_images: keep the first N images after sorting by name.
        size: ``None`` native size, an int for the longest side, or an exact ``(H, W)``.
        on_error: ``"raise"`` or ``"skip"`` unreadable images (see :func:`folder_dataset`).
        recursive: read subfolders too (folder datasets only).
    """
    opened = resolve_any_dataset(spec, max_images=max_images, size=size, on_error=on_error, recursive=recursive)
    return opened.frames() if isinstance(opened, VideoDataset) else opened


def resolve_video_dataset(
    spec: str | os.PathLike[str] | VideoDataset,
    *,
    max_clips: int | None = None,
    max_frames: int | None = None,
    size: Size = None,
) -> VideoDataset:
    """A video dataset by name or path; an image set is an error that lists the video sets."""
    opened = resolve_any_dataset(spec, max_images=max_clips, max_frames=max_frames, size=size)
    if not isinstance(opened, VideoDataset):
        raise UnknownDatasetError(
            f"{spec!r} is not a video dataset: video sets are {', '.join(list_datasets('clips'))}, a video file, "
            f"or a folder of clips; image sets are {', '.join(list_datasets('images'))}"
        )
    return opened
