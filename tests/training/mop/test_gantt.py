"""The schedule plot: one bar per unit, on its worker's row, in its configuration's colour; and its command."""

from __future__ import annotations

import json

import matplotlib

from mlsys.training.mop import gantt
from mlsys.training.mop.scheduler import simulate

matplotlib.use("Agg")


def test_one_bar_per_unit_on_its_worker():
    configs = {"a-adam": 2, "b-sgd": 2, "c-sgd": 1}
    visits = simulate({c: [1.0, 2.0] for c in configs}, configs, seed=1)
    fig = gantt.figure(visits)
    bars = [p for p in fig.axes[0].patches if p.get_width() > 0]
    assert len(bars) == len(visits) == 10
    assert sorted((round(b.get_x(), 6), round(b.get_y() + b.get_height() / 2)) for b in bars) == \
        sorted((round(v.start, 6), v.worker) for v in visits)
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"a\ne0", "a\ne1", "c\ne0"} <= labels


def test_the_command_draws_a_timeline_file(tmp_path):
    rows = [["c0-x", 0, 0, 0.0, 1.0], ["c0-x", 0, 1, 1.1, 2.0], ["c1-y", 0, 1, 0.0, 1.0], ["c1-y", 0, 0, 1.0, 2.2]]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    gantt.main([str(tmp_path / "t.json"), str(tmp_path / "out.png"), "title"])
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
