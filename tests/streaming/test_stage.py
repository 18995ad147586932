import json
from pathlib import Path

import pytest

from mlsys.datasets import VIDEO_PREDICTIONS_PREFIX
from mlsys.errors import DataError, SpecError
from mlsys.storage import DatasetStore
from mlsys.streaming import watermark
from mlsys.streaming.predictions import read_predictions
from mlsys.streaming.stage import StreamSpec, run
from mlsys.streaming.video import VideoError

SMALL = dict(model="small", width=0.25, size=64, error_every=4)


def _put(store, seq, path, stream="camera"):
    store.backend.put_file(watermark.segment_key(stream, seq), Path(path))


def _frames(store, stream="camera"):
    return read_predictions(store, stream)["frame"].tolist()


def test_segments_are_committed_in_order_and_state_carries_over(mlsys_home, segment_files):
    store = DatasetStore()
    seg = segment_files["segments"]
    _put(store, 1, seg[0])
    _put(store, 2, seg[1])
    first = run(StreamSpec(**SMALL))
    assert first.segments == [1, 2] and first.frames == 16
    assert watermark.read(store, "camera").segment == 2
    assert _frames(store) == list(range(16))
    assert run(StreamSpec(**SMALL)).segments == []  # nothing new: nothing redone
    _put(store, 3, seg[2])
    second = run(StreamSpec(**SMALL, batch_frames=2))  # resumed by boxes, two frames a batch, from pixels' state
    assert second.segments == [3]
    table = read_predictions(store, "camera")
    assert table["frame"].tolist() == list(range(24))
    assert table["segment"].tolist() == [1] * 8 + [2] * 8 + [3] * 8
    # the engine resumed from the committed state: segment 3's first frame was not a full refresh
    assert not bool(table["refreshed"].iloc[16])
    assert second.metrics["max_rel_error_sampled"] < 0.05  # vs the actual frames: sub-threshold noise only


def test_crash_between_write_and_watermark_commit_neither_skips_nor_duplicates(mlsys_home, segment_files,
                                                                               monkeypatch):
    store = DatasetStore()
    _put(store, 1, segment_files["segments"][0])
    real_commit = watermark.commit

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed after the dataset write, before the watermark")

    monkeypatch.setattr(watermark, "commit", crash)
    with pytest.raises(RuntimeError, match="worker killed"):
        run(StreamSpec(**SMALL))
    assert watermark.read(store, "camera").segment == 0  # nothing counts yet
    written = store.versions(VIDEO_PREDICTIONS_PREFIX + "camera")
    assert len(written) == 1  # the crashed run's output exists, uncommitted
    monkeypatch.setattr(watermark, "commit", real_commit)
    retry = run(StreamSpec(**SMALL))  # Airflow's retry
    assert retry.segments == [1]
    assert _frames(store) == list(range(8))  # every frame exactly once
    assert [r.version for r in store.versions(VIDEO_PREDICTIONS_PREFIX + "camera")] == [written[0].version]


def test_out_of_order_segment_stops_after_committing_what_precedes_it(mlsys_home, segment_files):
    store = DatasetStore()
    seg = segment_files["segments"]
    _put(store, 1, seg[0])
    _put(store, 3, seg[2])
    with pytest.raises(watermark.SegmentOrderError, match="segment 3 .* arrived before segment 2"):
        run(StreamSpec(**SMALL))
    assert watermark.read(store, "camera").segment == 1
    assert _frames(store) == list(range(8))
    _put(store, 2, seg[1])
    assert run(StreamSpec(**SMALL)).segments == [2, 3]
    assert _frames(store) == list(range(24))


def test_corrupt_segment_and_wrong_frame_size_lose_no_committed_output(mlsys_home, segment_files):
    store = DatasetStore()
    _put(store, 1, segment_files["segments"][0])
    _put(store, 2, segment_files["corrupt"])
    with pytest.raises(VideoError, match="corrupt"):
        run(StreamSpec(**SMALL))
    mark = watermark.read(store, "camera")
    assert mark.segment == 1 and _frames(store) == list(range(8))
    store2 = DatasetStore()
    _put(store2, 1, segment_files["segments"][1], stream="other")
    with pytest.raises(DataError, match=r"segment 1 .*built for \(3, 48, 48\).*resize=True"):
        run(StreamSpec(stream="other", model="small", width=0.25, size=48, resize=False))
    assert watermark.read(store2, "other").segment == 0
    with pytest.raises(SpecError, match="StreamSpec.stream='a/b'"):
        StreamSpec(stream="a/b")


def test_mlsys_stream_video_cli_logs_metrics_and_plot_to_mlflow(mlsys_home, segment_files, capsys):
    import mlflow

    from mlsys import cli

    assert cli.main(["stream", "--video", str(segment_files["segments"][0]), "--model", "small", "--width", "0.25",
                     "--size", "64", "--mode", "approx", "--error-every", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 8 and result["predictions"]["rows"] == 8
    from mlsys.tracking import tracker

    tracker.configure()
    runs = mlflow.search_runs(experiment_names=["mlsys-cli"], output_format="list")
    metrics = runs[0].data.metrics
    for key in ("frames_per_s", "changed_share_mean", "speedup", "theoretical_speedup", "max_rel_error_sampled",
                "top1_agreement_sampled"):
        assert key in metrics
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(runs[0].info.run_id, "frame_latency_ms")) == 8
    assert "stream_frames.png" in [a.path for a in client.list_artifacts(runs[0].info.run_id)]
    assert runs[0].data.params["mode"] == "approx"


def test_stream_put_cli_numbers_segments_and_rejects_corrupt_files(mlsys_home, segment_files, capsys):
    from mlsys import cli

    assert cli.main(["stream-put", "--video", str(segment_files["segments"][0])]) == 0
    assert cli.main(["stream-put", "--video", str(segment_files["segments"][1])]) == 0
    assert [s for s, _ in watermark.segments(DatasetStore(), "camera")] == [1, 2]
    assert cli.main(["stream-put", "--video", str(segment_files["corrupt"])]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert cli.main(["stream-put", "--video", str(segment_files["segments"][0]), "--seq", "2"]) == 2


def test_the_default_network_writes_imagenet_classes_and_agreement_figures(mlsys_home, segment_files):
    import torch

    from mlsys.streaming import networks
    from mlsys.streaming.incremental.efficientnet import efficientnet_lite0, imagenet_classes
    from mlsys.streaming.video import read_video

    store = DatasetStore()
    _put(store, 1, segment_files["segments"][0])
    result = run(StreamSpec(size=64, error_every=2))  # efficientnet-lite0 (trained) by default
    assert StreamSpec().model == networks.TRAINED
    table = read_predictions(store, "camera")
    names = imagenet_classes()
    assert table["class_name"].tolist() == [names[i] for i in table["class_id"]]
    assert [t[0] for t in table["top5_ids"]] == table["class_id"].tolist()
    assert [p[0] for p in table["top5_probabilities"]] == table["probability"].tolist()
    assert all(list(p) == sorted(p, reverse=True) and 0 < p[0] <= 1 for p in table["top5_probabilities"])
    first = read_video(segment_files["segments"][0], (64, 64))[:1]
    with torch.no_grad():  # the first frame is a full inference: its row is the network's own prediction
        probs = efficientnet_lite0(image_size=(64, 64))(first).softmax(-1)
    assert table["class_id"].iloc[0] == int(probs.argmax()) and table["probability"].iloc[0] == pytest.approx(
        float(probs.max()), abs=1e-5)
    for key in ("top1_agreement_sampled", "top5_overlap_sampled", "top_prob_abs_diff_sampled", "max_rel_error_sampled",
                "refreshed_share"):
        assert 0 <= result.metrics[key] <= 1 or key == "max_rel_error_sampled"
    assert result.metrics["refreshed_share"] == table["refreshed"].mean()
    with pytest.raises(SpecError, match=r"StreamSpec.weights='w.pth' is invalid: weights apply to"):
        StreamSpec(model="vgg16", weights="w.pth")
