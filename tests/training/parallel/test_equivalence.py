"""One step under pipeline (K=2, 4; M=1, 4, 8), ddp (world 2) and pipeline x ddp (2 x 2) equals single-process training (CPU, gloo).

Each case is a torchrun job (tests/training/parallel/dist_gradcheck.py) in which every rank
compares its loss and its own gradients with the single-process step on the
same batch and raises on a difference above 1e-5; the launcher turns that into a
LaunchError naming the rank.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlsys.training.parallel.launcher import launch

SCRIPT = str(Path(__file__).with_name("dist_gradcheck.py"))


def _run(nproc: int, *args: str) -> dict:
    lines: list[str] = []
    launch([SCRIPT, *args], nproc, on_line=lines.append, env={"MLSYS_CPU_DEVICES": str(nproc)})
    worst = json.loads([line for line in lines if line.startswith("{")][-1])["worst"]
    assert all(diff <= 1e-5 for diff in worst.values()), worst
    return worst


def test_two_stages_both_schedules_rematerialized_and_ddp_match_single_process():
    worst = _run(2, "--schedules", "gpipe,1f1b", "--microbatches", "1,4,8", "--ddp", "--rematerialize")
    assert set(worst) == {"gpipe K=2 M=1", "gpipe K=2 M=4", "gpipe K=2 M=8", "1f1b K=2 M=4", "1f1b K=2 M=8",
                          "ddp world=2", "gpipe+remat K=2 M=4"}


def test_four_stages_and_pipeline_x_ddp_match_single_process():
    worst = _run(4, "--schedules", "gpipe", "--microbatches", "1,4,8", "--hybrid-stages", "2")
    assert set(worst) == {"gpipe K=4 M=1", "gpipe K=4 M=4", "gpipe K=4 M=8",
                          "pipeline x ddp K=2 R=2 M=1", "pipeline x ddp K=2 R=2 M=4", "pipeline x ddp K=2 R=2 M=8"}
