"""``mlsys stream-put``: upload a video file as the next segment of a stream.

    mlsys stream-put --stream camera --video clip.mp4          # next number after the newest segment
    mlsys stream-put --stream camera --video clip.mp4 --seq 7  # an explicit number

The file is probed first, so a corrupt video never lands. The segment watcher
then wakes the ``mlsys_video_stream`` DAG; ``mlsys stream`` processes the
pending segments without Airflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from mlsys.errors import MlsysError
    from mlsys.storage import DatasetStore
    from mlsys.streaming import watermark
    from mlsys.streaming.video import probe

    try:
        info = probe(args.video)
        store = DatasetStore(args.storage_uri or None)
        found = watermark.segments(store, args.stream)
        seq = args.seq or (found[-1][0] + 1 if found else 1)
        if any(s == seq for s, _ in found):
            raise MlsysError(f"stream {args.stream!r} already has segment {seq}: segments are immutable, use --seq "
                             f"{found[-1][0] + 1}")
        key = watermark.segment_key(args.stream, seq)
        store.backend.put_file(key, Path(args.video))
    except MlsysError as exc:
        print(f"mlsys stream-put: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"stream": args.stream, "segment": seq, "uri": store.backend.uri(key), "frames": info.frames}))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--video", required=True, help="the video file (mp4)")
    p.add_argument("--stream", default="camera", help="stream name (default: camera)")
    p.add_argument("--seq", type=int, default=0, help="segment number (default: the newest + 1)")
    p.add_argument("--storage-uri", default="", help="storage root (default: $MLSYS_STORAGE_URI)")
