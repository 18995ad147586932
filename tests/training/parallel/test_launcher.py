"""torchrun launcher: the log streams, a failing rank fails the launch with that rank's error, a hang is killed."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest

from mlsys.errors import SpecError
from mlsys.training.parallel.launcher import LaunchError, emit, launch, parse_event

WORKER = textwrap.dedent("""
    import os, pathlib, sys, time
    from mlsys.training.parallel.launcher import rank_errors

    @rank_errors
    def main():
        rank = int(os.environ["RANK"])
        print(f"hello from rank {rank} of {os.environ['WORLD_SIZE']}", flush=True)
        said = pathlib.Path(sys.argv[3])  # a folder: each healthy rank leaves a file there once it has said hello
        if rank == int(sys.argv[1]):
            # wait until every other rank has said hello (a loaded machine starts ranks late), then fail
            for _ in range(600):
                if len(list(said.glob("rank-*"))) >= int(os.environ["WORLD_SIZE"]) - 1:
                    break
                time.sleep(0.1)
            raise ValueError(f"bad shard on rank {rank}")
        (said / f"rank-{rank}").touch()
        time.sleep(float(sys.argv[2]))

    main()
""")


def test_a_failed_rank_fails_with_its_error(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    (tmp_path / "said").mkdir()
    lines: list[str] = []
    with pytest.raises(LaunchError, match=r"rank 1 failed: ValueError: bad shard on rank 1") as info:
        # rank 0 would sleep: torchrun stops it once rank 1 fails
        launch([str(script), "1", "30", str(tmp_path / "said")], 2, on_line=lines.append)
    assert 'raise ValueError(f"bad shard on rank {rank}")' in str(info.value)
    assert {"hello from rank 0 of 2\n", "hello from rank 1 of 2\n"} <= set(lines)  # the log streamed


def test_events_round_trip(capsys):
    emit("metrics", step=3, metrics={"loss": 0.5})
    line = capsys.readouterr().out
    assert parse_event("[rank0]: " + line) == {"kind": "metrics", "step": 3, "metrics": {"loss": 0.5}}
    assert parse_event("an ordinary log line") is None


def test_bad_process_count():
    with pytest.raises(ValueError, match=r"nproc=0 is invalid"):
        launch(["x.py"], 0)


HANG_WORKER = Path(__file__).with_name("hang_worker.py")


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for init to reap it: either way nothing runs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _hang(tmp_path, hang_rank: int, seconds: float, **limits) -> tuple[LaunchError, float, list[int]]:
    pids = tmp_path / "pids"
    pids.mkdir()
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch([str(HANG_WORKER), str(pids), str(hang_rank), str(seconds)], 2, on_line=lambda line: None,
               grace_s=2, **limits)
    took = time.monotonic() - started
    left = [int(p) for f in pids.glob("rank-*") for p in f.read_text().split()]  # each rank and the agent
    assert len(left) == 4, "both ranks started"
    return info.value, took, left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="names ranks from /proc (Linux)")
def test_a_rank_silent_past_silence_s_is_killed_and_named(tmp_path):
    """Rank 1 hangs without a word and ignores SIGTERM; rank 0 is done: the watchdog fires with no output."""
    error, took, pids = _hang(tmp_path, hang_rank=1, seconds=600, silence_s=3)
    assert re.search(r"printed no line for 3 s \(silence_s\).*silent rank 1 still running", str(error)), str(error)
    assert took < 60, f"the watchdog took {took:.0f} s"
    assert all(_gone(pid) for pid in pids), "no rank, and not the agent, outlives the launch"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="names ranks from /proc (Linux)")
def test_the_overall_timeout_fires_without_output(tmp_path):
    """Both ranks sleep in silence for 90 s; a 4 s limit ends the job long before (today's launcher waited)."""
    error, took, pids = _hang(tmp_path, hang_rank=-1, seconds=90, timeout_s=4)
    assert re.search(r"ran past its 4 s limit \(timeout_s\).*ranks 0, 1 still running", str(error)), str(error)
    assert took < 60, f"the watchdog took {took:.0f} s"
    assert all(_gone(pid) for pid in pids)


@pytest.mark.parametrize("limit", ["timeout_s", "silence_s"])
def test_limits_must_be_positive(limit):
    with pytest.raises(SpecError, match=rf"launch\.{limit}=0 is invalid"):
        launch(["x.py"], 1, **{limit: 0})
