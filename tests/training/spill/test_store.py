"""The spill store: record layouts, the disk tier's files, full disks, atomic checkpoints."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from mlsys.training.spill.store import (
    HEADER,
    Layout,
    SpillStore,
    load_checkpoint,
    save_checkpoint,
    views,
)

REPO = Path(__file__).resolve().parents[3]


def _layer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3))


def test_layout_is_aligned_and_state_is_appended():
    layout = Layout.of(_layer())
    names = [(s.kind, s.name) for s in layout.slots]
    assert names[:4] == [("param", "0.weight"), ("param", "0.bias"), ("param", "1.weight"), ("param", "1.bias")]
    assert ("buffer", "1.running_mean") in names and ("buffer", "1.num_batches_tracked") in names
    assert all(s.offset % 64 == 0 and s.offset >= HEADER for s in layout.slots)
    full = layout.with_state({0: {"exp_avg": ((3, 5), "torch.float32"), "step": ((), "torch.float32")}})
    assert full.slots[: len(layout.slots)] == layout.slots, "weights keep their offsets: forward loads a prefix"
    assert full.weights_nbytes == layout.nbytes and full.nbytes > layout.nbytes
    assert Layout.from_json(full.to_json()) == full


@pytest.mark.parametrize("tier", ["host", "disk"])
def test_records_round_trip(tmp_path, tier):
    layer = _layer()
    store = SpillStore(tier, tmp_path / "s" if tier == "disk" else None)
    i = store.add(layer)
    store.set_state(i, {0: {"exp_avg": ((3, 5), "torch.float32")}})
    v = views(store.layouts[i], store.acquire(i))
    assert torch.equal(v[("param", "0.weight")], layer[0].weight.detach())
    v[("state", "0.exp_avg")].fill_(7.0)
    del v
    again = views(store.layouts[i], store.acquire(i))
    assert torch.equal(again[("param", "0.bias")], layer[0].bias.detach()), "set_state keeps the weights"
    assert again[("state", "0.exp_avg")].eq(7.0).all(), "writes persist (MAP_SHARED on disk)"
    if tier == "disk":
        assert store.path(i).stat().st_size == store.layouts[i].nbytes
        other = SpillStore.open(store.root) if store.save_manifest() else None
        assert other.layouts == store.layouts
        assert torch.equal(views(other.layouts[i], other.acquire(i))[("state", "0.exp_avg")], again[("state", "0.exp_avg")])


def _run_with_file_size_limit(limit: int, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` with RLIMIT_FSIZE (a full disk, for files beyond ``limit`` bytes) and SIGXFSZ ignored."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO / "include"), "PATH": "/usr/bin:/bin"})


def test_full_disk_fails_at_allocation_naming_the_path(tmp_path):
    out = _run_with_file_size_limit(1 << 16, f"""
        import torch
        from mlsys.training.spill.store import SpillStore
        store = SpillStore("disk", {str(tmp_path / "s")!r})
        store.add(torch.nn.Linear(8, 8))  # small: fits
        try:
            store.add(torch.nn.Linear(512, 512))  # 1 MiB: the "disk" is full
        except OSError as exc:
            print("ERROR", exc)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERROR" in out.stdout and str(tmp_path / "s" / "layer_00001.bin") in out.stdout, out.stdout
    assert not (tmp_path / "s" / "layer_00001.bin").exists(), "no half-allocated file is left behind"


def test_checkpoint_is_atomic_on_a_full_disk(tmp_path):
    store = SpillStore("disk", tmp_path / "s")
    store.add(nn.Linear(256, 256))
    store.save_manifest()
    ckpt = save_checkpoint(store, tmp_path / "spill.ckpt")
    before = ckpt.read_bytes()
    out = _run_with_file_size_limit(1 << 12, f"""
        import torch
        from mlsys.training.spill.store import SpillStore, views, save_checkpoint
        store = SpillStore.open({str(tmp_path / "s")!r})
        views(store.layouts[0], store.acquire(0))[("param", "weight")].fill_(1.0)  # new weights to save
        try:
            save_checkpoint(store, {str(ckpt)!r})
        except OSError as exc:
            print("ERROR", exc)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERROR" in out.stdout and str(ckpt) in out.stdout and "unchanged" in out.stdout, out.stdout
    assert ckpt.read_bytes() == before, "the previous checkpoint is intact"
    assert not Path(str(ckpt) + ".tmp").exists()
    load_checkpoint(store, ckpt)  # and it still loads: the old weights come back
    torch.manual_seed(0)
    assert not views(store.layouts[0], store.acquire(0))[("param", "weight")].eq(1.0).all()


def test_bad_tier_and_missing_root():
    with pytest.raises(ValueError, match="tier='ram'"):
        SpillStore("ram")
    with pytest.raises(ValueError, match="needs a root"):
        SpillStore("disk")
