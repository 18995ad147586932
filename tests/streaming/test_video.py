import pytest
import torch

from mlsys.streaming.video import (
    VideoError,
    iter_frames,
    probe,
    read_video,
    write_video,
)


def test_decodes_and_resizes_real_videos(data_dir):
    path = data_dir / "video" / "carphone_pristine.mp4"
    info = probe(path)
    assert (info.width, info.height, info.frames, info.codec) == (176, 144, 120, "h264")
    frames = read_video(path, (32, 40), max_frames=3)
    assert frames.shape == (3, 3, 32, 40) and frames.dtype == torch.float32
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1 and float(frames.std()) > 0.05


def test_round_trip_of_a_written_segment(segment_files):
    frames = read_video(segment_files["segments"][0], (64, 64))
    assert frames.shape == (8, 3, 64, 64)
    assert float((frames - segment_files["frames"][:8]).abs().mean()) < 0.05


def test_corrupt_missing_and_truncated_videos_are_clear_errors(tmp_path, segment_files):
    with pytest.raises(VideoError, match="junk.mp4.*corrupt or not a video"):
        read_video(segment_files["corrupt"], (64, 64))
    with pytest.raises(VideoError, match="does not exist"):
        read_video(tmp_path / "nope.mp4", (64, 64))
    # header first (faststart), then cut in the middle of the frame data: fewer frames than announced
    import av

    src = tmp_path / "fast.mp4"
    frames = torch.rand(30, 3, 32, 32)
    with av.open(str(src), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for f in (frames * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy():
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoError, match="cut.mp4' is truncated: its header announces 30 frames"):
        list(iter_frames(cut, (32, 32)))
    whole = tmp_path / "whole.mp4"
    write_video(whole, frames[:4])
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(VideoError, match="cut2.mp4"):
        read_video(cut2, (32, 32))
