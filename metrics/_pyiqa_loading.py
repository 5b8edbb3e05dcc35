"""Where pyiqa's metrics get their parameter files while the suite builds one.

pyiqa (Chen et al., IQA-PyTorch, https://github.com/chaofengc/IQA-PyTorch) fetches files in four
places: its own ``load_file_from_url`` (every pyiqa checkpoint and parameter file, cached in
``$TORCH_HOME/hub/pyiqa``), torchvision's ``weights=`` (ImageNet backbones), timm's
``pretrained=True`` (ImageNet backbones from the Hugging Face hub) and its CLIP loader. Inside
:func:`loading` those calls behave as follows; everywhere else pyiqa behaves exactly as shipped.

Pretrained mode:
    a file is looked up in the explicit folder, then ``IQA_ROBUSTNESS_WEIGHTS``, then the usual
    cache, and downloaded as pyiqa would when it is nowhere on disk. Offline (``HF_HUB_OFFLINE=1``)
    a missing file raises :class:`~metrics.weights.MissingWeightsError` at once. When the metric's
    own checkpoint is then loaded strictly over the whole network (``full_checkpoint``), the
    ImageNet initialisation of its backbone is skipped: every one of those weights would be
    overwritten, so the result is identical and needs one download fewer.
Random mode (smoke runs):
    pyiqa's checkpoints are not loaded, backbones are built without pretrained weights, and every
    download raises :class:`DownloadBlockedError`. Non-network parameter files (NIQE/BRISQUE
    statistics, learned prompts) are used when already on disk and are otherwise missing.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .weights import MissingWeightsError, find_weight_file, missing_weights_error, offline_mode, resolve_weight_file

log = logging.getLogger(__name__)


class DownloadBlockedError(MissingWeightsError):
    """Random-weights mode tried to download a file; smoke runs never touch the network."""


@dataclass(frozen=True)
class _Context:
    metric: str
    weights_dir: Path | None
    random: bool
    full_checkpoint: bool

    @property
    def skip_backbone_init(self) -> bool:
        return self.random or self.full_checkpoint


_ACTIVE: ContextVar[_Context | None] = ContextVar("iqa_robustness_pyiqa_loading", default=None)
_INSTALL_LOCK = threading.Lock()
_RANDOM_LOCK = threading.RLock()
_ORIGINAL: dict[str, Callable[..., Any]] = {}


def _blocked(ctx: _Context, what: str) -> DownloadBlockedError:
    return DownloadBlockedError(
        f"{ctx.metric}: random-weights mode never downloads, but building it asked for {what}. "
        "This metric cannot be built from random weights alone: provide its real weights "
        "(weights folder, IQA_ROBUSTNESS_WEIGHTS or pyiqa's cache) or leave it out of the smoke run."
    )


def _filename(url: str, file_name: str | None = None) -> str:
    return file_name or os.path.basename(urlparse(url).path)


# -- pyiqa's own files ------------------------------------------------------------------------
def _load_file_from_url(url: str, model_dir: str | None = None, progress: bool = True, file_name=None) -> str:
    ctx = _ACTIVE.get()
    if ctx is None:
        return _ORIGINAL["load_file_from_url"](url, model_dir, progress, file_name)
    from pyiqa.utils import download_util

    name = _filename(url, file_name)
    cache = Path(model_dir or download_util.DEFAULT_CACHE_DIR)
    if ctx.random:
        found = find_weight_file(name, ctx.weights_dir, extra_dirs=(cache,))
        if found is None:
            raise _blocked(ctx, f"{name!r} ({url})")
        return str(found)
    return str(resolve_weight_file(name, ctx.weights_dir, urls=(url,), cache_dir=cache))


def _load_pretrained_network(net: torch.nn.Module, model_path: str, strict: bool = True, weight_keys=None):
    ctx = _ACTIVE.get()
    if ctx is not None and ctx.random:
        log.debug("%s: random weights, not loading %s into %s", ctx.metric, model_path, type(net).__name__)
        return None
    return _ORIGINAL["load_pretrained_network"](net, model_path, strict, weight_keys)


# -- ImageNet backbones -----------------------------------------------------------------------
def _tv_verify(cls, obj: Any) -> Any:
    ctx = _ACTIVE.get()
    if ctx is not None and ctx.skip_backbone_init and obj is not None:
        log.debug("%s: torchvision backbone built without %s", ctx.metric, obj)
        return None
    return _ORIGINAL["tv_verify"](cls, obj)


def _tv_get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
    ctx = _ACTIVE.get()
    if ctx is None:
        return _ORIGINAL["tv_get_state_dict"](self, *args, **kwargs)
    name = _filename(self.url)
    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    found = find_weight_file(name, ctx.weights_dir, extra_dirs=(hub_checkpoints,))
    if found is not None:
        return torch.load(found, map_location="cpu", weights_only=True)
    if offline_mode():
        raise missing_weights_error(name, ctx.weights_dir, hub_checkpoints, why=" Offline mode: no download attempted.")
    from urllib.error import URLError

    try:
        return _ORIGINAL["tv_get_state_dict"](self, *args, **kwargs)
    except (URLError, ConnectionError, TimeoutError) as exc:  # name the file, as pyiqa's own files are named
        raise missing_weights_error(
            name, ctx.weights_dir, hub_checkpoints, why=f" Download failed ({self.url}: {exc})."
        ) from exc


def _timm_load_pretrained(model: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
    ctx = _ACTIVE.get()
    if ctx is not None and ctx.skip_backbone_init:
        log.debug("%s: timm backbone %s built without pretrained weights", ctx.metric, type(model).__name__)
        return None
    return _ORIGINAL["timm_load_pretrained"](model, *args, **kwargs)


# -- CLIP ------------------------------------------------------------------------------------
def _clip_download(key: str) -> Callable[[str, str], str]:
    def download(url: str, root: str) -> str:
        ctx = _ACTIVE.get()
        if ctx is None:
            return _ORIGINAL[key](url, root)
        name = _filename(url)
        if ctx.random:
            raise _blocked(ctx, f"the CLIP model {name!r}")
        found = find_weight_file(name, ctx.weights_dir)
        if found is not None:
            return str(found)
        if not (Path(root) / name).is_file() and offline_mode():
            raise missing_weights_error(name, ctx.weights_dir, root, why=" Offline mode: no download attempted.")
        return _ORIGINAL[key](url, root)

    return download


#: modules with an OpenAI-CLIP style ``_download(url, root)``: pyiqa's two copies and the ``clip`` package
_CLIP_LOADERS = ("pyiqa.archs.clip_model", "pyiqa.archs.afineclip_model", "clip.clip")


def _install() -> None:
    """Swap pyiqa's, timm's, torchvision's and CLIP's fetch functions for context-aware wrappers.

    The wrappers call the originals unchanged whenever no :func:`loading` block is active.
    """
    with _INSTALL_LOCK:
        if _ORIGINAL:
            return
        import sys

        import pyiqa  # noqa: F401  (imports arch_util and download_util)
        import timm.models._builder as timm_builder
        from pyiqa.archs import arch_util
        from pyiqa.utils import download_util
        from torchvision.models._api import WeightsEnum

        originals = {
            "load_file_from_url": download_util.load_file_from_url,
            "load_pretrained_network": arch_util.load_pretrained_network,
            "tv_verify": WeightsEnum.verify.__func__,
            "tv_get_state_dict": WeightsEnum.get_state_dict,
            "timm_load_pretrained": timm_builder.load_pretrained,
        }
        wrappers = {
            "load_file_from_url": _load_file_from_url,
            "load_pretrained_network": _load_pretrained_network,
        }
        # pyiqa modules bind these names at import; later imports pick up the wrappers.
        for mod_name, mod in list(sys.modules.items()):
            if not mod_name.startswith("pyiqa") or mod is None:
                continue
            for attr, wrapper in wrappers.items():
                if getattr(mod, attr, None) is originals[attr]:
                    setattr(mod, attr, wrapper)
        WeightsEnum.verify = classmethod(_tv_verify)
        WeightsEnum.get_state_dict = _tv_get_state_dict
        timm_builder.load_pretrained = _timm_load_pretrained
        for module_name in _CLIP_LOADERS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # pragma: no cover - optional dependency of pyiqa
                continue
            originals[module_name] = module._download
            module._download = _clip_download(module_name)
        _ORIGINAL.update(originals)


def _block_download(ctx: _Context, what: str) -> Callable[..., Any]:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        target = args[0] if args else kwargs.get("url", "a file")
        raise _blocked(ctx, f"{what} {target}")

    return blocked


@contextlib.contextmanager
def _network_blocked(ctx: _Context) -> Iterator[None]:
    """Random builds only: torch.hub and the Hugging Face hub refuse to download."""
    import huggingface_hub.constants as hf_constants

    with _RANDOM_LOCK:
        saved = (
            torch.hub.load_state_dict_from_url,
            torch.hub.download_url_to_file,
            hf_constants.HF_HUB_OFFLINE,
        )
        torch.hub.load_state_dict_from_url = _block_download(ctx, "torch.hub.load_state_dict_from_url")
        torch.hub.download_url_to_file = _block_download(ctx, "torch.hub.download_url_to_file")
        hf_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            (
                torch.hub.load_state_dict_from_url,
                torch.hub.download_url_to_file,
                hf_constants.HF_HUB_OFFLINE,
            ) = saved


@contextlib.contextmanager
def loading(metric: str, weights_dir: Path | None, random: bool, full_checkpoint: bool = False) -> Iterator[None]:
    """Build pyiqa metric ``metric`` inside this block to get the suite's weight resolution.

    Args:
        metric: the metric's name (used in messages).
        weights_dir: explicit folder searched first, or None.
        random: smoke mode: random weights and no download at all.
        full_checkpoint: the metric's checkpoint is loaded strictly over the whole network, so
            ImageNet backbone initialisation can be skipped.
    """
    _install()
    ctx = _Context(metric, weights_dir, random, full_checkpoint)
    token = _ACTIVE.set(ctx)
    try:
        if random:
            with _network_blocked(ctx):
                yield
        else:
            yield
    finally:
        _ACTIVE.reset(token)
