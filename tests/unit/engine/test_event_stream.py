"""The one cancel rule of a submitted request's EventStream, without a model: explicit cancel, a consumer
cancelled while it waits, and a stream dropped unfinished all cancel it once; a finished one never."""

from __future__ import annotations

import asyncio
import gc

import pytest

from lmdock.engine import Admitted, EventStream, Finished, TextChunk

DONE = Finished(reason="eog", prompt_tokens=3, cached_tokens=0, generated_tokens=1)


def counted() -> tuple[EventStream, list[int]]:
    """A stream whose cancel callback records each call."""
    cancels: list[int] = []
    return EventStream(lambda: cancels.append(1)), cancels


def test_events_come_in_order_and_end_after_finished():
    async def scenario():
        stream, cancels = counted()
        for event in (Admitted(3, 0), TextChunk("hi"), DONE):
            stream.inbox.put_nowait(event)
        got = [event async for event in stream]
        stream.cancel()  # a no-op once finished
        return got, len(cancels)

    got, cancels = asyncio.run(scenario())
    assert got == [Admitted(3, 0), TextChunk("hi"), DONE] and cancels == 0


def test_cancel_before_iterating_cancels_once():
    async def scenario():
        stream, cancels = counted()
        stream.cancel()
        await stream.aclose()
        stream.cancel()
        return len(cancels)  # counted while the stream is still held: not its __del__

    assert asyncio.run(scenario()) == 1


def test_a_consumer_cancelled_while_waiting_cancels_the_request():
    async def scenario():
        stream, cancels = counted()
        consumer = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        return len(cancels)  # counted while the stream is still held: not its __del__

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize(
    ("last", "expected"), [(TextChunk("hi"), 1), (DONE, 0)], ids=["unfinished", "finished"]
)
def test_a_dropped_stream_cancels_itself_only_when_unfinished(last, expected):
    async def scenario():
        stream, cancels = counted()
        stream.inbox.put_nowait(last)
        await anext(stream)
        del stream
        gc.collect()
        await asyncio.sleep(0)  # the cancel hops to the event loop
        return len(cancels)

    assert asyncio.run(scenario()) == expected
