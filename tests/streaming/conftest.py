"""Small real video segments for the streaming tests (64 x 64, mpeg4, written with PyAV)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def segment_files(tmp_path_factory):
    """Three consecutive 8-frame segments of one synthetic fixed-camera stream, plus a corrupt file."""
    from mlsys.streaming.incremental.synthetic import synthetic_frames
    from mlsys.streaming.video import write_video

    folder = tmp_path_factory.mktemp("segments")
    frames = synthetic_frames(24, 64, 0.05, speed=3, seed=7)
    paths = [write_video(folder / f"part{i + 1}.mp4", frames[8 * i:8 * i + 8]) for i in range(3)]
    junk = folder / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00 ftypisom" + b"garbage" * 200)
    return {"segments": paths, "corrupt": junk, "frames": frames}
