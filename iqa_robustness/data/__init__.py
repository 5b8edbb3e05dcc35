"""Image and video datasets: named sets, folders and files, decoded to float RGB tensors in [0, 1].

:mod:`.decode` (files to tensors), :mod:`.images` (image sets, batches), :mod:`.video` (reading
clips), :mod:`.video_sets` (clip sets), :mod:`.registry` (one registry of named sets, and the
resolution of names and paths). The names below are the package's public API.
"""

from iqa_robustness.data.decode import IMAGE_EXTENSIONS, Size, image_to_tensor, load_image, resize_image, target_size
from iqa_robustness.data.errors import DatasetNotFoundError, ImageReadError, UnknownDatasetError
from iqa_robustness.data.images import Dataset, ImageItem, folder_dataset, iter_batches, sample_dataset
from iqa_robustness.data.registry import (
    DATASETS,
    DatasetInfo,
    EnvLocator,
    dataset_info,
    is_video_dataset,
    list_datasets,
    register_dataset,
    resolve_any_dataset,
    resolve_dataset,
    resolve_video_dataset,
    shared_folder,
)
from iqa_robustness.data.video import VideoReadError, iter_clip_chunks, iter_frames, read_clip
from iqa_robustness.data.video_sets import ClipItem, VideoDataset, sample_clips

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "ClipItem",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "EnvLocator",
    "ImageItem",
    "ImageReadError",
    "Size",
    "UnknownDatasetError",
    "VideoDataset",
    "VideoReadError",
    "dataset_info",
    "folder_dataset",
    "image_to_tensor",
    "is_video_dataset",
    "iter_batches",
    "iter_clip_chunks",
    "iter_frames",
    "list_datasets",
    "load_image",
    "read_clip",
    "register_dataset",
    "resize_image",
    "resolve_any_dataset",
    "resolve_dataset",
    "resolve_video_dataset",
    "sample_clips",
    "sample_dataset",
    "shared_folder",
    "target_size",
]
