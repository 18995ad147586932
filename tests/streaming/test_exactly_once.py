"""Streaming storage that appends, a watermark that only moves forward, segments that are immutable."""

import json
import threading
from pathlib import Path

import pytest

from mlsys.storage import DatasetStore, LocalBackend
from mlsys.streaming import watermark
from mlsys.streaming.predictions import committed, read_predictions
from mlsys.streaming.stage import StreamSpec, run

SMALL = {"model": "small", "width": 0.25, "size": 64, "error_every": 0}


@pytest.fixture(scope="module")
def six_segments(tmp_path_factory):
    """Six consecutive 8-frame segments of one synthetic stream."""
    from mlsys.streaming.incremental.synthetic import synthetic_frames
    from mlsys.streaming.video import write_video

    folder = tmp_path_factory.mktemp("six")
    frames = synthetic_frames(48, 64, 0.05, speed=3, seed=11)
    return [write_video(folder / f"s{i + 1}.mp4", frames[8 * i:8 * i + 8]) for i in range(6)]


def _put(store, seq, path, stream="camera"):
    store.backend.put_file(watermark.segment_key(stream, seq), Path(path))


def test_storage_per_segment_does_not_grow_with_the_stream(mlsys_home, six_segments, monkeypatch):
    store = DatasetStore()
    for seq, path in enumerate(six_segments, 1):
        _put(store, seq, path)
    written, rows, marks = [0], [], []
    put_bytes, put_file, write = LocalBackend.put_bytes, LocalBackend.put_file, DatasetStore.write

    def count_bytes(self, key, data):
        written[0] += len(data)
        return put_bytes(self, key, data)

    def count_file(self, key, local_path):
        written[0] += Path(local_path).stat().st_size
        return put_file(self, key, local_path)

    def count_rows(self, name, data, **kwargs):
        rows.append(data.num_rows)
        return write(self, name, data, **kwargs)

    real_commit = watermark.commit

    def boundary(*args, **kwargs):
        real_commit(*args, **kwargs)
        marks.append(written[0])  # every byte of a segment is written by the time its commit returns

    monkeypatch.setattr(LocalBackend, "put_bytes", count_bytes)
    monkeypatch.setattr(LocalBackend, "put_file", count_file)
    monkeypatch.setattr(DatasetStore, "write", count_rows)
    monkeypatch.setattr(watermark, "commit", boundary)
    assert run(StreamSpec(**SMALL)).segments == [1, 2, 3, 4, 5, 6]
    assert rows == [8] * 6, f"rows written per segment {rows}: each segment must write only its own frames"
    per_segment = [b - a for a, b in zip([0] + marks, marks)]
    later = per_segment[1:]  # the first segment also creates the watermark
    # ~55 kB a segment (mostly the engine state); the cumulative table grew it by ~150 bytes a segment here
    assert max(later) - min(later) <= 100, f"bytes written per segment grow with the stream: {per_segment}"
    assert read_predictions(store, "camera")["frame"].tolist() == list(range(48))
    assert [r.extra["segment"] for r in committed(store, "camera")] == [1, 2, 3, 4, 5, 6]


def test_state_blobs_are_pruned_to_the_one_the_watermark_names(mlsys_home, segment_files):
    store = DatasetStore()
    for seq, path in enumerate(segment_files["segments"], 1):
        _put(store, seq, path)
    run(StreamSpec(**SMALL, max_segments=2))
    mark = watermark.read(store, "camera")
    assert mark.segment == 2 and store.backend.list("streams/camera/state/") == [mark.state]
    run(StreamSpec(**SMALL))
    mark = watermark.read(store, "camera")
    assert mark.segment == 3 and store.backend.list("streams/camera/state/") == [mark.state]
    assert read_predictions(store, "camera")["frame"].tolist() == list(range(24))


def test_a_stale_writer_beside_the_dag_cannot_move_the_watermark_back(mlsys_home, segment_files, monkeypatch):
    """`mlsys stream` reads watermark 0 and processes segment 1; meanwhile the DAG commits 1, 2, 3."""
    store = DatasetStore()
    for seq, path in enumerate(segment_files["segments"], 1):
        _put(store, seq, path)
    real_commit, calls = watermark.commit, []

    def overtaken(*args, **kwargs):
        calls.append(args[2].segment)
        if len(calls) == 1:  # the stale writer is about to commit: the DAG runs to the end first
            monkeypatch.setattr(watermark, "commit", real_commit)
            assert run(StreamSpec(**SMALL)).segments == [1, 2, 3]
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(watermark, "commit", overtaken)
    with pytest.raises(watermark.WatermarkConflict, match="moved to segment 3 .* refused"):
        run(StreamSpec(**SMALL, mode="approx"))  # another writer with other settings
    mark = watermark.read(store, "camera")
    assert mark.segment == 3 and mark.frames == 24
    assert read_predictions(store, "camera")["frame"].tolist() == list(range(24))  # every frame exactly once
    assert store.backend.list("streams/camera/state/") == [mark.state]
    assert run(StreamSpec(**SMALL)).segments == []  # the retry re-reads the watermark: nothing left to do


def test_the_watermark_moves_by_compare_and_set_one_segment_forward(mlsys_home):
    store = DatasetStore()
    zero, one, two = watermark.Watermark(), watermark.Watermark(1, 8, "a"), watermark.Watermark(2, 16, "b")
    watermark.commit(store, "camera", one, zero)
    with pytest.raises(watermark.WatermarkConflict, match="moved to segment 1"):
        watermark.commit(store, "camera", one, zero)  # a second writer that also read 0
    with pytest.raises(watermark.WatermarkConflict, match="may commit segment 2, not 1"):
        watermark.commit(store, "camera", one, one)  # never the same, never backwards
    with pytest.raises(watermark.WatermarkConflict, match="may commit segment 1, not 2"):
        watermark.commit(store, "camera", two, zero)
    watermark.commit(store, "camera", two, one)
    assert watermark.read(store, "camera") == two


def _race(n, target):
    barrier, results = threading.Barrier(n), [None] * n

    def worker(i):
        results[i] = target(i, barrier)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _check_then_race(monkeypatch, parties):
    """Both puts list the segments before either writes: the window a check-then-write loses in."""
    real, seen, barrier = watermark.segments, set(), threading.Barrier(parties)

    def listed(*args, **kwargs):
        found = real(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread() and threading.get_ident() not in seen:
            seen.add(threading.get_ident())
            barrier.wait(10)
        return found

    monkeypatch.setattr(watermark, "segments", listed)


def test_two_concurrent_stream_puts_of_one_seq_exactly_one_succeeds(mlsys_home, segment_files, monkeypatch, capsys):
    from mlsys import cli

    _check_then_race(monkeypatch, 2)
    videos = segment_files["segments"][:2]
    codes = _race(2, lambda i, _: cli.main(["stream-put", "--video", str(videos[i]), "--seq", "1"]))
    assert sorted(codes) == [0, 2]
    assert "already has segment 1" in capsys.readouterr().err
    (seq, key), = watermark.segments(DatasetStore(), "camera")
    winner = videos[codes.index(0)]
    assert seq == 1 and DatasetStore().get_bytes(key) == Path(winner).read_bytes()  # never overwritten


def test_concurrent_stream_puts_without_seq_take_their_own_numbers(mlsys_home, segment_files, monkeypatch, capsys):
    from mlsys import cli

    _check_then_race(monkeypatch, 2)
    videos = segment_files["segments"][:2]
    assert _race(2, lambda i, _: cli.main(["stream-put", "--video", str(videos[i])])) == [0, 0]
    printed = sorted(json.loads(line)["segment"] for line in capsys.readouterr().out.splitlines())
    assert printed == [1, 2] and [s for s, _ in watermark.segments(DatasetStore(), "camera")] == [1, 2]


def test_a_store_written_before_per_segment_storage_reads_on(mlsys_home, segment_files):
    """A cumulative predictions version and a legacy watermark: the next segment chains onto them."""
    store = DatasetStore()
    seg = segment_files["segments"]
    _put(store, 1, seg[0])
    run(StreamSpec(**SMALL))
    mark = watermark.read(store, "camera")
    table = read_predictions(store, "camera")
    legacy = store.write("video_predictions_camera", table.assign(probability=table["probability"] + 0),
                         extra={"stream": "camera", "last_segment": 1, "frames": 8})  # no "previous": cumulative
    state = "streams/camera/state/000001.pt"
    store.put_bytes(state, store.get_bytes(mark.state))
    store.put_bytes("streams/camera/_watermark.json",
                    json.dumps({"segment": 1, "frames": 8, "predictions": legacy.version, "state": state}).encode())
    _put(store, 2, seg[1])
    assert run(StreamSpec(**SMALL)).segments == [2]
    mark = watermark.read(store, "camera")
    assert read_predictions(store, "camera")["frame"].tolist() == list(range(16))
    assert committed(store, "camera")[0].version == legacy.version
    assert store.backend.list("streams/camera/state/") == [mark.state]
