"""KonCept512: Hosu, Lin, Sziranyi and Saupe, "KonIQ-10k: An Ecologically Valid Database for Deep
Learning of Blind Image Quality Assessment", IEEE TIP 29, 2020 (Keras original: github.com/subpic/koniq).

No-reference image quality: an InceptionResNet-v2 body and a regression head of three
Linear-ReLU-BatchNorm-Dropout blocks (1536 -> 2048 -> 1024 -> 256) and a final Linear to one score,
trained on KonIQ-10k images at 512x384 with MOS on KonIQ-10k's scale (3.9 to 88.4 in the
database; bounds here 0 to 100). Higher is better.

This is the PyTorch port by Zhengyu Zhao (github.com/ZhengyuZhao/koniq-PyTorch); its released
``KonCept512.pth`` is the file PyTorch robustness code for KonCept512 loads (e.g. the MSU-group
``MetricModel`` wrappers). The port's ``model_qa`` keeps every child of Cadene's
``inceptionresnetv2`` but the classifier, so ``base`` ends with that model's
``AvgPool2d(8, count_include_pad=False)``: at 384x512 the last feature map is 10x14 and the pool
averages only its top-left 8x8 window (a 1x1 output). This is reproduced as released. timm's
``inception_resnet_v2`` has the same layers and state-dict keys as Cadene's, so it is the body here.

Preprocessing: the port scores KonIQ-10k's pre-resized 512x384 images, normalised with mean 0.5 and
std 0.5 (``x * 2 - 1``). Images of another size are resized to 384x512 (H x W) here with
:func:`torch.nn.functional.interpolate` (bilinear, ``antialias=True``), differentiable, where the
database was resized with PIL; aspect ratio is not kept. (The MSU-group wrappers call
``transforms.Resize([512, 384])``, i.e. H = 512 and W = 384; pass ``input_size=(512, 384)`` for that.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ._released import load_release_checkpoint, resize_bilinear, resolve_release_file, state_dict_from
from .base import Metric, MetricSpec
from .registry import metric

log = logging.getLogger(__name__)

KONCEPT512_FILE = "KonCept512.pth"
#: The port's README links the released model on SURFdrive; no checksum is published.
KONCEPT512_RELEASE = "https://surfdrive.surf.nl/files/index.php/s/oeGv7wEyyMwwbIO"
KONCEPT512_URLS = (f"{KONCEPT512_RELEASE}/download",)
#: (H, W) of the KonIQ-10k images the model was trained on (512x384 landscape).
INPUT_SIZE = (384, 512)

#: The children of Cadene's / timm's InceptionResNet-v2 that ``model_qa.base`` keeps, in order.
BODY_LAYERS = (
    "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
    "mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2", "block8", "conv2d_7b",
)  # fmt: skip

SPEC = MetricSpec(
    name="koncept512",
    kind="nr-image",
    lower_better=False,
    bounds=(0.0, 100.0),
    differentiable=True,
    fixed_size=INPUT_SIZE,
    weight_files=(KONCEPT512_FILE,),
    heavy=True,
    source="own",
    description="KonCept512 (Hosu et al., TIP 2020): InceptionResNet-v2 at 512x384, PyTorch port; KonIQ-10k",
    aliases=("koncept",),
)


def _head_block(in_features: int, out_features: int, dropout: float) -> list[nn.Module]:
    return [
        nn.Linear(in_features, out_features),
        nn.ReLU(),
        nn.BatchNorm1d(out_features),
        nn.Dropout(dropout),
    ]


class KonCept512Net(nn.Module):
    """The port's ``model_qa(num_classes=1)``; its state-dict keys are those of ``KonCept512.pth``.

    ``base.0`` to ``base.14`` are the InceptionResNet-v2 layers in :data:`BODY_LAYERS`, ``base.15`` the
    parameter-free ``AvgPool2d(8)``; ``fc.0``, ``fc.2``, ``fc.4``, ``fc.6``, ``fc.8``, ``fc.10``
    and ``fc.12`` are the head's Linear and BatchNorm layers.
    """

    def __init__(self) -> None:
        import timm  # imported on first build: registering the metric stays light

        super().__init__()
        body = timm.create_model("inception_resnet_v2", pretrained=False)
        layers = [getattr(body, name) for name in BODY_LAYERS]
        self.base = nn.Sequential(*layers, nn.AvgPool2d(8, count_include_pad=False))
        self.fc = nn.Sequential(
            *_head_block(1536, 2048, 0.25),
            *_head_block(2048, 1024, 0.25),
            *_head_block(1024, 256, 0.5),
            nn.Linear(256, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 3, H, W) -> scores (N, 1)."""
        return self.fc(self.base(x).flatten(1))


class KonCept512(Metric):
    """KonCept512 as a metric: images in [0, 1] -> predicted MOS per image, shape (N,).

    Args:
        spec: the metric's declared facts.
        net: the network, with the released parameters or random ones.
        input_size: (H, W) every image is resized to. The head takes 1536 values, so the last feature
            map must pool to 1x1: each side between 299 and 554 px works.
    """

    def __init__(self, spec: MetricSpec, net: KonCept512Net, input_size: tuple[int, int] = INPUT_SIZE) -> None:
        super().__init__(spec)
        self.net = net
        self.input_size = input_size

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_bilinear(x, self.input_size)
        return self.net(x * 2.0 - 1.0).reshape(-1)  # Normalize(mean=0.5, std=0.5), as the port

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_size={self.input_size}"


def load_koncept512(path: str | Path) -> KonCept512Net:
    """A :class:`KonCept512Net` with the parameters of a released ``KonCept512.pth``, loaded strictly."""
    net = KonCept512Net()
    state = state_dict_from(load_release_checkpoint(path, KONCEPT512_RELEASE), None, path)
    net.load_state_dict(state, strict=True)
    log.debug("KonCept512 loaded from %s", path)
    return net.eval()


@metric(SPEC)
def build_koncept512(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
    """Random mode: random InceptionResNet-v2 and head (timm ``pretrained=False``), no download."""
    if random:
        return KonCept512(spec, KonCept512Net().eval())
    path = resolve_release_file(KONCEPT512_FILE, weights_dir, KONCEPT512_URLS, KONCEPT512_RELEASE)
    return KonCept512(spec, load_koncept512(path))
