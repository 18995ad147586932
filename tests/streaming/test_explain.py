import json

import numpy as np
import pytest
from PIL import Image

from mlsys.errors import SpecError
from mlsys.streaming.explain import ExplainSpec


# one intra-op thread (tests/conftest.py): results do not depend on it; on a loaded 2-core host tiny ops
# run 10x faster
pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["--model", "small", "--width", "0.25", "--size", "32", "--patch", "8", "--stride", "4", "--batch", "8"]


@pytest.fixture
def picture(tmp_path):
    yy, xx = np.mgrid[0:48, 0:40]
    rgb = np.stack([(yy * 5) % 256, (xx * 6) % 256, ((yy + xx) * 3) % 256], -1).astype(np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(rgb).save(path)
    return path


def _run(capsys, *argv):
    from mlsys import cli

    assert cli.main(["explain", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_mlsys_explain_logs_the_heatmap_png_and_its_values_to_mlflow(mlsys_home, picture, tmp_path, capsys):
    import mlflow

    from mlsys.tracking import tracker

    out = _run(capsys, "--image", str(picture), *SMALL, "--out", str(tmp_path / "maps"))
    assert out["mode"] == "exact" and out["tau"] == 1.0 and out["target_name"] == f"class {out['target']}"
    metrics = out["metrics"]
    assert metrics["grid"] == 49 and metrics["positions"] == 49 and metrics["theoretical_speedup"] > 1
    png = tmp_path / "maps" / "picture_exact_heatmap.png"
    assert out["png"] == str(png) and Image.open(png).size[0] > 300
    tracker.configure()
    run = mlflow.search_runs(experiment_names=["mlsys-cli"], output_format="list")[0]
    client = mlflow.MlflowClient()
    assert {"occlusion_heatmap.png", "heatmap.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    with open(client.download_artifacts(run.info.run_id, "heatmap.json", str(tmp_path))) as f:
        heat = json.load(f)
    assert heat["ys"] == list(range(0, 25, 4)) and len(heat["probs"]) == 7 and heat["target"] == out["target"]
    assert run.data.params["patch"] == "8" and run.data.metrics["positions"] == 49


def test_approximate_mode_tunes_tau_first(mlsys_home, picture, capsys):
    out = _run(capsys, "--image", str(picture), *SMALL, "--mode", "approx", "--coarse-stride", "8",
               "--top-share", "0.5")
    assert 0 < out["tau"] <= 1 and "tuning_ssim" in out["metrics"]
    assert out["metrics"]["tuning_ssim"] >= 0.9 or out["tau"] == 1.0  # the smallest tau that reaches it, else 1
    assert out["metrics"]["positions"] < out["metrics"]["grid"]  # drill-down ran part of the fine grid
    fixed = _run(capsys, "--image", str(picture), *SMALL, "--mode", "approx", "--tau", "0.5", "--coarse-stride", "4")
    assert fixed["tau"] == 0.5 and "tuning_ssim" not in fixed["metrics"]


def test_bad_input_fails_before_any_run_with_the_fix(mlsys_home, tmp_path, capsys):
    from mlsys import cli

    with pytest.raises(SpecError, match=r"ExplainSpec.image='' is invalid: give an image file"):
        ExplainSpec()
    with pytest.raises(SpecError, match=r"ExplainSpec.tau=0.5 is invalid: tau applies to mode='approx' only"):
        ExplainSpec(image="a.png", tau=0.5)
    with pytest.raises(SpecError, match=r"ExplainSpec.patch=64 is invalid: use a patch of at most size=32"):
        ExplainSpec(image="a.png", size=32, patch=64)
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    assert cli.main(["explain", "--image", str(bad), *SMALL]) == 2
    assert "cannot read image" in capsys.readouterr().err
