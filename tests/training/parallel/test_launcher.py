"""torchrun launcher: the log streams, a failing rank fails the launch with that rank's error."""

from __future__ import annotations

import textwrap

import pytest

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
