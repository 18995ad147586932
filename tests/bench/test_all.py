"""`mlsys bench all`: runs the registered benchmarks, writes their figures between the markers of the docs
(keeping the hand-written text) and one PNG per benchmark, and reports a failing benchmark."""

from __future__ import annotations

import json
import re

import pytest

from mlsys.bench import BENCHMARKS
from mlsys.bench.all import document, plan
from mlsys.cli import main


def test_every_registered_benchmark_has_a_plan_at_both_sizes():
    assert set(plan.PLAN) == set(BENCHMARKS) - {"all"}
    assert all(set(sizes) == {"full", "quick"} for sizes in plan.PLAN.values())


def test_bench_all_writes_the_block_and_the_plots_and_reports_a_failure(tmp_path, capsys, monkeypatch):
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text(f"# Benchmarks\n\nhand-written intro\n\n{document.BEGIN}\nold figures\n{document.END}\n\n## Hand-written tail\n")
    monkeypatch.setitem(plan.PLAN, "stats", {"quick": ["--rows", "5000", "--repeat", "2"], "full": []})
    monkeypatch.setitem(plan.PLAN, "label", {"quick": ["--rows", "0"], "full": []})  # refused by its parser: exit 2
    code = main(["bench", "all", "--size", "quick", "--only", "stats,label", "--docs", str(docs), "--save", str(tmp_path / "json")])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and out["failed"] == ["label"]
    stats = next(r for r in out["results"] if r["name"] == "stats")
    assert stats["returncode"] == 0 and stats["command"] == "mlsys bench stats --rows 5000 --repeat 2"
    assert len(stats["load_average"]) == 2
    speedup = next(f for f in stats["figures"] if f["name"] == "speedup_1t")
    assert speedup["target"] == [">=", 10.0] and speedup["repeat"] == 2
    assert speedup["range"][0] <= speedup["median"] <= speedup["range"][1]
    saved = json.loads((tmp_path / "json" / "stats.json").read_text())  # the benchmark's own JSON, whole
    assert saved["median"]["speedup_1t"] == speedup["median"] and len(saved["runs"]) == 2
    assert not (tmp_path / "json" / "label.json").exists()  # it printed no JSON

    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written intro\n\n") and text.endswith("## Hand-written tail\n")
    assert "old figures" not in text and text.count(document.BEGIN) == text.count(document.END) == 1
    row = next(line for line in text.splitlines() if line.startswith("| stats | `speedup_1t` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(speedup["median"], rel=5e-3)
    assert cells[5] == ">= 10.0" and cells[6] in ("yes", "**no**")
    assert re.search(r"\| label \| `mlsys bench label --rows 0` \| \d+ s \| [\d.]+ \| \*\*exit 2\*\*", text)
    assert "Machine: " in text and "Commit: `" in text and "Load average (1 min): " in text
    png = tmp_path / "docs" / "images" / "bench-stats.png"
    assert "![stats: each figure's median, range and target](images/bench-stats.png)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "docs" / "images" / "bench-label.png").exists()  # no figures, no plot

    main(["bench", "all", "--size", "quick", "--only", "label", "--docs", str(docs)])  # again: the block is replaced
    text = docs.read_text()
    assert text.count(document.BEGIN) == 1 and "| stats |" not in text and text.endswith("## Hand-written tail\n")


def test_a_file_with_one_marker_is_refused_and_one_without_gets_the_block_appended(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text(f"# B\n{document.BEGIN}\n")
    with pytest.raises(ValueError, match="one of the `bench all` markers"):
        document.write(doc, f"{document.BEGIN}\nx\n{document.END}\n")
    doc.write_text("# B\n\ntext\n")
    document.write(doc, f"{document.BEGIN}\nx\n{document.END}\n")
    assert doc.read_text() == f"# B\n\ntext\n\n{document.BEGIN}\nx\n{document.END}\n"


def test_figures_of_a_json_without_median_come_from_its_own_fields():
    krypton = {"results": [{"video": "a.mp4", "mode": "exact", "speedup": 1.5, "speedup_share_of_theoretical": 0.8},
                           {"video": "a.mp4", "mode": "approx", "speedup": 4.0, "speedup_share_of_theoretical": 0.5}]}
    got = {f["name"]: f for f in plan.figures("krypton", krypton)}
    assert got["speedup_share_of_theoretical[a.mp4,exact]"]["target"] == [">=", 0.7]
    assert got["speedup_share_of_theoretical[a.mp4,approx]"]["target"] is None
    assert got["speedup[a.mp4,approx]"]["median"] == 4.0
    scale = {"appliers": {"fast": {"rows_per_s": 3000.0}, "dask": {"rows_per_s": 1000.0}, "spark": {"rows_per_s": 0}}}
    assert [(f["name"], f["median"]) for f in plan.figures("label_scale", scale)] == [("speedup_vs_dask", 3.0)]
    nested = {"median": {"c32": {"speedup": 12.0}}, "range": {"c32": {"speedup": [11.0, 13.0]}}, "repeat": 3,
              "targets": {"c32/speedup": [">=", 10.0]}}
    assert plan.figures("serve", nested) == [{"name": "c32/speedup", "median": 12.0, "range": [11.0, 13.0], "repeat": 3,
                                              "target": [">=", 10.0]}]
