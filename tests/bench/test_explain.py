import json
import subprocess
import sys

import numpy as np
from PIL import Image


def test_bench_explain_times_both_modes_against_full_inference_of_every_copy(tmp_path):
    path = tmp_path / "img.png"
    yy, xx = np.mgrid[0:40, 0:40]
    Image.fromarray(np.stack([yy * 6, xx * 6, (yy + xx) * 3], -1).astype(np.uint8)).save(path)
    out = subprocess.run(
        [sys.executable, "-m", "mlsys.cli", "bench", "explain", "--model", "resnet18", "--width", "0.125", "--image",
         str(path), "--size", "32", "--patch", "8", "--stride", "4", "--coarse-stride", "4", "--tau", "1",
         "--full-positions", "0", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    exact, approx = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    for row in (exact, approx):
        assert {"speedup", "theoretical_speedup", "ssim", "model", "full_s", "ours_s", "tau"} <= set(row)
        assert row["model"] == "resnet18" and row["grid"] == 49 and row["full_positions_timed"] == 49
        assert row["speedup"] == row["full_s"] / row["ours_s"]
    assert exact["max_rel_error_vs_full"] <= 1e-5 and exact["ssim"] == 1.0
    assert approx["ssim"] == 1.0 and approx["tau"] == 1.0  # no threshold, no drill-down: the exact heatmap


def test_bench_explain_rejects_a_bad_tau_before_any_inference(capsys):
    import pytest

    from mlsys.bench.explain import main

    with pytest.raises(SystemExit) as stop:
        main(["--tau", "1.5", "--size", "32"])
    assert stop.value.code == 2 and "OcclusionConfig.tau=1.5 is invalid" in capsys.readouterr().err
