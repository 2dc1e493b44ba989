"""The one cancel rule of a submitted request's EventStream, without a model: explicit cancel, a consumer
cancelled while it waits, and a stream dropped unfinished all cancel it once; a finished one never."""

from __future__ import annotations

import asyncio
import gc

from lmdock.engine import Admitted, EventStream, Finished, TextChunk

DONE = Finished(reason="eog", prompt_tokens=3, cached_tokens=0, generated_tokens=1)


def test_events_come_in_order_and_end_after_finished():
    async def scenario():
        cancels: list[int] = []
        stream = EventStream(lambda: cancels.append(1))
        for event in (Admitted(3, 0), TextChunk("hi"), DONE):
            stream.inbox.put_nowait(event)
        got = [event async for event in stream]
        stream.cancel()  # a no-op once finished
        return got, cancels

    got, cancels = asyncio.run(scenario())
    assert got == [Admitted(3, 0), TextChunk("hi"), DONE] and cancels == []


def test_cancel_before_iterating_cancels_once():
    async def scenario():
        cancels: list[int] = []
        stream = EventStream(lambda: cancels.append(1))
        stream.cancel()
        await stream.aclose()
        stream.cancel()
        return cancels

    assert asyncio.run(scenario()) == [1]


def test_a_consumer_cancelled_while_waiting_cancels_the_request():
    async def scenario():
        cancels: list[int] = []
        stream = EventStream(lambda: cancels.append(1))
        consumer = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        return cancels

    assert asyncio.run(scenario()) == [1]


def test_a_stream_dropped_unfinished_cancels_itself():
    async def scenario():
        cancels: list[int] = []
        stream = EventStream(lambda: cancels.append(1))
        stream.inbox.put_nowait(TextChunk("hi"))
        await anext(stream)
        del stream
        gc.collect()
        await asyncio.sleep(0)  # the cancel hops to the event loop
        return cancels

    assert asyncio.run(scenario()) == [1]


def test_a_stream_dropped_after_finished_does_not_cancel():
    async def scenario():
        cancels: list[int] = []
        stream = EventStream(lambda: cancels.append(1))
        stream.inbox.put_nowait(DONE)
        await anext(stream)
        del stream
        gc.collect()
        await asyncio.sleep(0)
        return cancels

    assert asyncio.run(scenario()) == []
