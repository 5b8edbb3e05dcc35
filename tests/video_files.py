"""Writing small video files for the tests (PyAV, the decoder the suite reads them with)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: Iterable[np.ndarray], fmt: str = "yuv4mpegpipe", codec: str = "rawvideo") -> Path:
    """Encode RGB uint8 frames (H, W, 3) as yuv420p at 25 fps; y4m (raw) by default."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
