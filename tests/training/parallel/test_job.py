"""The torchrun training job: SIGKILL mid-training, resume from the last checkpoint, identical final weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.training.parallel.job import JobConfig
from mlsys.training.parallel.launcher import launch, parse_event

TEXTS = [f"comment {i} {'check out my channel' if i % 3 == 0 else 'love this song'} {i % 7}" for i in range(120)]


def _workdir(path: Path, strategy: str, checkpoints: Path, every: int = 2) -> Path:
    path.mkdir()
    ids, bag = HashingFeaturizer(num_buckets=256).encode_padded(TEXTS)
    gen = torch.Generator().manual_seed(1)
    torch.save({"ids": ids, "bag": bag, "proba": torch.softmax(torch.randn(len(TEXTS), 2, generator=gen), 1),
                "weight": torch.rand(len(TEXTS), generator=gen)}, path / "data.pt")
    cfg = JobConfig(model={"num_buckets": 256, "dim": 16, "depth": 2, "dropout": 0.1}, strategy=strategy, nproc=2,
                    epochs=2, batch_size=16, microbatches=4, log_every=1, checkpoint_uri=str(checkpoints),
                    checkpoint_every=every)
    (path / "job.json").write_text(json.dumps(cfg.to_json()))
    return path


def _job_processes(work: Path) -> list[int]:
    """Live processes whose command line names this work dir (the torchrun agent and its ranks)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(work).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _weights(work: Path) -> dict:
    return torch.load(work / "result.pt", weights_only=True)


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    # 120 rows / 16 = 8 steps per epoch, 16 steps; dropout on, so RNG state must be restored too.
    clean = _workdir(tmp_path / "clean", "pipeline", tmp_path / "ckpt-clean", every=100)
    work = _workdir(tmp_path / "killed", "pipeline", tmp_path / "ckpt")
    code = "import sys; from mlsys.training.parallel.launcher import launch; launch(['-m', 'mlsys.training.parallel.job', sys.argv[1]], 2)"
    # the uninterrupted run, side by side with the one to kill (each in its own process group)
    uninterrupted = subprocess.Popen([sys.executable, "-c", code, str(clean)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
    proc = subprocess.Popen([sys.executable, "-c", code, str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own process group: the kill reaches torchrun and every rank
    killed_after = None
    for line in proc.stdout:
        event = parse_event(line)
        if event and event["kind"] == "checkpoint" and event["step"] >= 10:  # in epoch 2, mid-epoch
            os.killpg(proc.pid, signal.SIGKILL)
            killed_after = event["step"]
            break
    proc.wait(timeout=60)
    assert killed_after is not None and proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30  # the ranks (own sessions, started by torchrun) notice their agent is gone
    while _job_processes(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _job_processes(work), "ranks outlived the killed launcher"
    assert not (work / "result.pt").exists()
    latest = json.loads((tmp_path / "ckpt" / "latest.json").read_text())["step"]
    assert 10 <= latest < 16

    events = []
    launch(["-m", "mlsys.training.parallel.job", str(work)], 2, on_line=lambda line: events.append(parse_event(line)))
    resumed = [e for e in events if e and e["kind"] == "resumed"]
    assert resumed and resumed[0]["step"] == latest
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()[-3000:]
    a, b = _weights(clean), _weights(work)
    assert a.keys() == b.keys() == set(range(4))
    for i in a:
        for name in a[i]:
            assert torch.equal(a[i][name], b[i][name]), (i, name)
    summary_a = json.loads((clean / "result.json").read_text())
    summary_b = json.loads((work / "result.json").read_text())
    assert summary_b["steps"] == summary_a["steps"] == 16 and summary_b["steps_this_run"] == 16 - latest
    assert [h["train_loss"] for h in summary_a["history"]] == pytest.approx([h["train_loss"] for h in summary_b["history"]])


def test_ddp_job_trains_and_reports(tmp_path):
    work = _workdir(tmp_path / "ddp", "ddp", tmp_path / "ckpt", every=8)
    events = []
    launch(["-m", "mlsys.training.parallel.job", str(work)], 2, on_line=lambda line: events.append(parse_event(line)))
    kinds = [e["kind"] for e in events if e]
    assert kinds.count("checkpoint") == 2 and kinds[-1] == "done"
    steps = [e["step"] for e in events if e and e["kind"] == "metrics" and "train_loss_step" in e["metrics"]]
    assert steps == list(range(1, 17))
    summary = json.loads((work / "result.json").read_text())
    assert len(summary["history"]) == 2 and summary["history"][1]["train_loss"] < summary["history"][0]["train_loss"]
    assert summary["world_size"] == 2 and summary["timeline"] is None


@pytest.mark.parametrize("change, message", [
    ({"strategy": "pipeline", "balance": (2, 1)}, r"JobConfig\.balance=\(2, 1\) is invalid: the counts sum to 3 but the model has 4"),
    ({"strategy": "pipeline", "microbatches": 32}, r"JobConfig\.microbatches=32 is invalid: use between 1 and 16 micro-batches"),
    ({"strategy": "pipeline", "nproc": 5}, r"JobConfig\.nproc=5 is invalid: the model has 4 layers \(depth \+ 2\) and cannot be split into 5"),
    ({"strategy": "single"}, r"JobConfig\.strategy='single' is invalid: use one of \['ddp', 'pipeline'\]"),
    ({"strategy": "ddp", "nproc": 3}, r"JobConfig.nproc=3 is invalid: only 2 cpu device\(s\) here"),
    ({"strategy": "gossip"}, r"JobConfig.strategy='gossip' is invalid"),
])
def test_bad_job_configs_fail_before_spawning(change, message, monkeypatch):
    monkeypatch.setenv("MLSYS_CPU_DEVICES", "2")
    base = {"model": {"num_buckets": 256, "dim": 16, "depth": 2}, "strategy": "pipeline", "nproc": 2, "batch_size": 16}
    with pytest.raises(ValueError, match=message):
        JobConfig(**{**base, **change})


def test_a_resumed_pipeline_keeps_the_partition_of_its_checkpoint(tmp_path):
    # the first run is cut [3, 1] by hand; the retry is asked to balance by profiling, which may cut
    # differently, but its checkpoint holds [3, 1]'s stage weights, so it must keep [3, 1]
    work = _workdir(tmp_path / "work", "pipeline", tmp_path / "ckpt", every=4)
    cfg = json.loads((work / "job.json").read_text())
    (work / "job.json").write_text(json.dumps({**cfg, "balance": [3, 1]}))
    launch(["-m", "mlsys.training.parallel.job", str(work)], 2, on_line=lambda line: None)
    state = torch.load(tmp_path / "ckpt" / "step-00000016" / "rank-0.pt", weights_only=False)
    assert state["balance"] == [3, 1]
    (tmp_path / "ckpt" / "latest.json").write_text(json.dumps({"step": 12}))  # the one before is kept
    (work / "job.json").write_text(json.dumps({**cfg, "balance": []}))
    (work / "result.pt").unlink()
    events = []
    launch(["-m", "mlsys.training.parallel.job", str(work)], 2, on_line=lambda line: events.append(parse_event(line)))
    assert [e["step"] for e in events if e and e["kind"] == "resumed"] == [12]
    assert [e["balance"] for e in events if e and e["kind"] == "partition"] == [[3, 1]]
    assert (work / "result.pt").exists()
