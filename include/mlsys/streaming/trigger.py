"""The event trigger that wakes the stream DAG when new segments land under a stream's storage prefix.

It runs in Airflow's triggerer (event-driven scheduling through an
``AssetWatcher``), not in a worker: an asyncio loop that lists the prefix
every ``poll_interval`` seconds and yields one event per new segment number
past the watermark. No worker slot is held while it waits. Like
``mlsys.orchestration``, this module knows Airflow; it imports nothing heavy.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


def newest_pending(stream: str, storage_uri: str) -> tuple[int, int]:
    """(watermark segment, newest segment number stored) for ``stream``."""
    from mlsys.storage import DatasetStore
    from mlsys.streaming import watermark

    store = DatasetStore(storage_uri or None)
    mark = watermark.read(store, stream)
    found = watermark.segments(store, stream)
    return mark.segment, (found[-1][0] if found else 0)


class SegmentTrigger(BaseEventTrigger):
    """Fires when ``streams/<stream>/segments/`` holds a segment past the watermark."""

    def __init__(self, stream: str = "camera", storage_uri: str = "", poll_interval: float = 30.0):
        super().__init__()
        self.stream, self.storage_uri, self.poll_interval = stream, storage_uri, poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("mlsys.streaming.trigger.SegmentTrigger",
                {"stream": self.stream, "storage_uri": self.storage_uri, "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        announced = 0
        while True:
            done, newest = await asyncio.to_thread(newest_pending, self.stream, self.storage_uri)
            if newest > max(done, announced):
                announced = newest
                yield TriggerEvent({"stream": self.stream, "watermark": done, "newest_segment": newest})
            await asyncio.sleep(self.poll_interval)
