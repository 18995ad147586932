"""Decoding video files (mp4, or anything FFmpeg reads) into frames, with PyAV.

Frames are converted to RGB and resized by FFmpeg's scaler to the size the
model expects, then to float tensors (3, H, W) in [0, 1]. A file that is not
a video, or that ends before the frames its header announces, is an error
naming the file: a silently short stream would skip frames downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from mlsys.errors import DataError


class VideoError(DataError):
    """A video file that cannot be decoded (corrupt, truncated, no video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int  # as the container announces it (0 when unknown)
    fps: float
    width: int
    height: int
    codec: str


def probe(path: str | Path) -> VideoInfo:
    """The video stream's frame count, rate, size and codec."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        return VideoInfo(str(path), int(stream.frames or 0), float(stream.average_rate or 0), stream.width,
                         stream.height, stream.codec_context.name)
    finally:
        container.close()


def _open(path: str | Path):
    import av

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"video {str(p)!r} does not exist: give the path of an mp4 file")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(f"video {str(p)!r} cannot be opened ({exc}): it is corrupt or not a video file") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{str(p)!r} has no video stream: give a video file")
    return container


def iter_frames(path: str | Path, size: tuple[int, int], max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` as uint8 arrays (H, W, 3), resized to ``size`` = (height, width)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        announced = int(stream.frames or 0)
        count = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            raise VideoError(f"video {str(path)!r} is corrupt after frame {count} ({exc}); frames decoded before "
                             "it were kept, re-encode or replace the file to stream the rest") from exc
        if count == 0:
            raise VideoError(f"video {str(path)!r} has no decodable frame: it is corrupt or empty")
        if announced and count < announced:
            raise VideoError(f"video {str(path)!r} is truncated: its header announces {announced} frames, only "
                             f"{count} decode; re-copy the file or give a complete one")
    finally:
        container.close()


def to_tensor(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> float tensor (N, 3, H, W) in [0, 1]."""
    array = np.ascontiguousarray(np.stack(list(frames)) if isinstance(frames, list) else frames)
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def read_video(path: str | Path, size: tuple[int, int], max_frames: int | None = None) -> torch.Tensor:
    """All (or the first ``max_frames``) frames of ``path``: (N, 3, H, W) in [0, 1]."""
    return to_tensor(list(iter_frames(path, size, max_frames)))


def write_video(path: str | Path, frames: torch.Tensor, fps: int = 25, codec: str = "mpeg4") -> Path:
    """Encode frames (N, 3, H, W) in [0, 1] (H and W even) as a video file; used for segments and tests."""
    import av

    path = Path(path)
    array = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        for image in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
