"""SHARP's shared memory: checked for room before a run starts, and what a killed job left is reaped by the next."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlsys.bench.sharp import jobs
from mlsys.training.sharp import shm
from mlsys.training.sharp.runner import train_many

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/training/conftest.py


def _small_jobs():
    return jobs(models=1, steps=1, width=64, depth=4, batch=16)[-1:]  # the one that fits unspilled


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_that_does_not_fit_fails_before_it_starts_with_the_size_and_the_setting(monkeypatch):
    todo = _small_jobs()
    need = shm.job_bytes(todo[0])
    assert need > 0
    monkeypatch.setattr(shm, "free_bytes", lambda path: need // 2)  # a 64 MB container, scaled down
    before = set(shm.SHM.iterdir()) if shm.SHM.is_dir() else set()
    with pytest.raises(shm.ShmSpaceError, match=r"needs about .* only .* is free: raise MLSYS_SHM_SIZE"):
        train_many(todo, ["cpu"], threads=1)
    after = set(shm.SHM.iterdir()) if shm.SHM.is_dir() else set()
    assert not {p for p in after - before if p.name.startswith(f"{shm.PREFIX}{os.getpid()}-")}, "nothing written"


def test_an_explicit_root_is_checked_too(monkeypatch, tmp_path):
    monkeypatch.setattr(shm, "free_bytes", lambda path: 1)
    with pytest.raises(shm.ShmSpaceError, match=r"shm_size"):
        train_many(_small_jobs(), ["cpu"], threads=1, root=tmp_path / "sharp")


@pytest.mark.skipif(not (shm.SHM.is_dir() and os.access(shm.SHM, os.W_OK)), reason="no writable /dev/shm")
def test_the_next_run_removes_what_a_dead_job_leaked_and_keeps_the_living():
    dead = shm.SHM / f"{shm.PREFIX}{_dead_pid()}-leaked"
    (dead / "job-0").mkdir(parents=True)
    (dead / "job-0" / "layer_00000.bin").write_bytes(b"\0" * 4096)
    alive = shm.SHM / f"{shm.PREFIX}{os.getppid()}-alive"  # the pytest runner's parent: still running
    alive.mkdir()
    try:
        report = train_many(_small_jobs(), ["cpu"], threads=1)
        assert report.results  # the run itself went through
        assert not dead.exists(), "a dead job's shared memory outlived it"
        assert alive.exists(), "a living job's folder was removed"
    finally:
        for folder in (dead, alive):
            if folder.exists():
                subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_job_folders_carry_the_owner_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(shm, "SHM", tmp_path)
    root = shm.job_root(_small_jobs())
    assert root.parent == tmp_path and root.name.startswith(f"{shm.PREFIX}{os.getpid()}-")
    other = tmp_path / "unrelated-file"
    other.write_text("x")
    assert shm.reap_leaked(tmp_path) == [] and other.exists()  # its own folder and foreign files stay
    leaked = tmp_path / f"{shm.PREFIX}{_dead_pid()}-x"
    leaked.mkdir()
    assert shm.reap_leaked(tmp_path) == [leaked] and not leaked.exists()
