"""``mlsys stream-put``: upload a video file as the next segment of a stream.

    mlsys stream-put --stream camera --video clip.mp4          # next number after the newest segment
    mlsys stream-put --stream camera --video clip.mp4 --seq 7  # an explicit number

The file is probed first, so a corrupt video never lands. Segments are
immutable: the upload is create-only (``watermark.put_segment``), so of two
puts of one number exactly one succeeds; without ``--seq`` the loser takes
the next number. The segment watcher then wakes the ``mlsys_video_stream``
DAG; ``mlsys stream`` processes the pending segments without Airflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_ATTEMPTS = 5  # numbering rounds when concurrent puts without --seq race for a number


def run(args: argparse.Namespace) -> int:
    from mlsys.errors import MlsysError
    from mlsys.spec import require
    from mlsys.storage import DatasetStore
    from mlsys.streaming import watermark
    from mlsys.streaming.video import probe

    try:
        require(args.seq >= 0, "stream-put", "seq", args.seq, "use a segment number from 1, or 0 for the next one")
        info = probe(args.video)
        store = DatasetStore(args.storage_uri or None)
        for attempt in range(_ATTEMPTS):
            found = watermark.segments(store, args.stream)
            seq = args.seq or (found[-1][0] + 1 if found else 1)
            try:
                key = watermark.put_segment(store, args.stream, seq, Path(args.video))  # create-only
                break
            except watermark.SegmentExists as exc:
                if args.seq or attempt == _ATTEMPTS - 1:
                    newest = max([s for s, _ in watermark.segments(store, args.stream)], default=0)
                    raise MlsysError(f"{exc}; e.g. --seq {newest + 1}") from exc
                # a concurrent put took the number we chose: number again
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
