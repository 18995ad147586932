import asyncio
from pathlib import Path

from mlsys.storage import DatasetStore
from mlsys.streaming import watermark
from mlsys.streaming.trigger import SegmentTrigger


def test_trigger_fires_once_per_new_segment_past_the_watermark(mlsys_home, segment_files):
    store = DatasetStore()
    trigger = SegmentTrigger(stream="camera", storage_uri=store.root_uri, poll_interval=0.05)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlsys.streaming.trigger.SegmentTrigger" and SegmentTrigger(**kwargs).stream == "camera"

    async def scenario():
        events = trigger.run()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # no segment: the trigger waits (asleep in the triggerer, no worker held)
        store.backend.put_file(watermark.segment_key("camera", 1), Path(segment_files["segments"][0]))
        first = await asyncio.wait_for(waiting, 5)
        store.backend.put_file(watermark.segment_key("camera", 2), Path(segment_files["segments"][1]))
        second = await asyncio.wait_for(anext(events), 5)
        await events.aclose()
        return first.payload, second.payload

    first, second = asyncio.run(scenario())
    assert first == {"stream": "camera", "watermark": 0, "newest_segment": 1}
    assert second["newest_segment"] == 2


def test_trigger_stays_quiet_when_everything_is_committed(mlsys_home, segment_files):
    store = DatasetStore()
    store.backend.put_file(watermark.segment_key("camera", 1), Path(segment_files["segments"][0]))
    watermark.commit(store, "camera", watermark.Watermark(segment=1, frames=8), watermark.Watermark())

    async def scenario():
        events = SegmentTrigger(storage_uri=store.root_uri, poll_interval=0.05).run()
        try:
            await asyncio.wait_for(anext(events), 0.3)
        except asyncio.TimeoutError:
            return "quiet"
        return "fired"

    assert asyncio.run(scenario()) == "quiet"
