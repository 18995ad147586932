import json
import subprocess
import sys

KEYS = {"video", "mode", "model", "full_fps", "ours_fps", "speedup", "speedups", "theoretical_speedup", "changed_area",
        "top1_agreement", "top5_overlap", "top_prob_abs_diff", "refreshed_share", "max_rel_error",
        "max_rel_error_vs_seen"}


def _bench(*argv):
    out = subprocess.run([sys.executable, "-m", "mlsys.cli", "bench", "krypton", *argv],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["results"]


def test_bench_krypton_smoke_via_the_cli(mlsys_home, segment_files):
    results = _bench("--synthetic", "--video", str(segment_files["segments"][0]), "--frames", "3", "--size", "64",
                     "--model", "small", "--width", "0.25", "--mode", "exact", "--repeats", "2")
    assert [(r["video"], r["mode"]) for r in results] == [("part1.mp4", "exact"), ("synthetic-5%", "exact")]
    for row in results:
        assert KEYS <= set(row)
        assert row["frames"] == 2 and row["full_fps"] > 0 and row["ours_fps"] > 0 and len(row["speedups"]) == 2
        assert 0 <= row["top1_agreement"] <= 1 and 0 <= row["top5_overlap"] <= 1 and row["theoretical_speedup"] > 0
        assert row["max_rel_error_vs_seen"] <= 1e-5 and row["model"] == "small"


def test_bench_krypton_on_the_trained_network_agrees_with_full_inference(mlsys_home, segment_files):
    results = _bench("--video", str(segment_files["segments"][0]), "--frames", "5", "--size", "64", "--repeats", "1",
                     "--threads", "1")
    assert [(r["model"], r["mode"]) for r in results] == [("efficientnet-lite0", "exact"), ("efficientnet-lite0", "approx")]
    exact, approx = results
    assert exact["max_rel_error_vs_seen"] <= 1e-5 and isinstance(exact["top_class"], str)
    assert approx["config"]["refresh_every"] == 30 and approx["theoretical_speedup"] >= exact["theoretical_speedup"]


def test_bench_krypton_rejects_a_bad_override_before_decoding_anything(capsys):
    import pytest

    from mlsys.bench.krypton import main

    with pytest.raises(SystemExit) as stop:
        main(["--synthetic", "--batch-frames", "2", "--frames", "3", "--size", "32"])
    assert stop.value.code == 2
    assert "use regions='boxes' with it" in capsys.readouterr().err
