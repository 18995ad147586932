import json
import subprocess
import sys

KEYS = {"video", "mode", "full_fps", "ours_fps", "speedup", "theoretical_speedup", "changed_area", "max_rel_error",
        "top1_agreement", "max_rel_error_vs_seen"}


def test_bench_krypton_smoke_via_the_cli(mlsys_home, segment_files):
    out = subprocess.run(
        [sys.executable, "-m", "mlsys.cli", "bench", "krypton", "--synthetic", "--video", str(segment_files["segments"][0]),
         "--frames", "3", "--size", "64", "--model", "small", "--width", "0.25", "--mode", "exact"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    assert [(r["video"], r["mode"]) for r in results] == [("part1.mp4", "exact"), ("synthetic-5%", "exact")]
    for row in results:
        assert KEYS <= set(row)
        assert row["frames"] == 2 and row["full_fps"] > 0 and row["ours_fps"] > 0
        assert 0 <= row["top1_agreement"] <= 1 and row["theoretical_speedup"] > 0
        if row["mode"] == "exact":
            assert row["max_rel_error_vs_seen"] <= 1e-4


def test_bench_krypton_rejects_a_bad_override_before_decoding_anything(capsys):
    import pytest

    from mlsys.bench.krypton import main

    with pytest.raises(SystemExit) as stop:
        main(["--synthetic", "--batch-frames", "2", "--frames", "3", "--size", "32"])
    assert stop.value.code == 2
    assert "use regions='boxes' with it" in capsys.readouterr().err
