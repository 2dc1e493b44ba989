"""Core events -> Anthropic SSE events and Message, through one state machine."""

from lmdock.api.anthropic.encode import MessageEncoder
from lmdock.core import events as ev


def _run(events, admitted: ev.Usage | None = None):
    enc = MessageEncoder("m")
    wire = [enc.start_event(admitted or ev.Usage(input_tokens=10, output_tokens=0, cached_tokens=4))]
    for e in events:
        wire.extend(enc.feed(e))
    return wire, enc.message()


def test_blocks_open_and_close_in_order_and_accumulate_to_the_message():
    wire, message = _run(
        [
            ev.ThinkingDelta("think"),
            ev.TextDelta("Hel"),
            ev.TextDelta("lo"),
            ev.ToolCallStart(0, "toolu_x", "f"),
            ev.ToolCallArgsDelta(0, '{"a":'),
            ev.ToolCallArgsDelta(0, "1}"),
            ev.ToolCallEnd(0, {"a": 1}),
            ev.Done("tool_use", ev.Usage(input_tokens=10, output_tokens=7, cached_tokens=4)),
        ]
    )
    types = [w.type for w in wire]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",  # signature_delta before the thinking block stops
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert wire[3].delta.type == "signature_delta"
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[1].text == "Hello" and message.content[2].input == {"a": 1}
    assert message.content[0].signature
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 6 and message.usage.cache_read_input_tokens == 4
    delta = wire[-2]
    assert delta.usage.output_tokens == 7 and delta.usage.cache_read_input_tokens == 4


def test_context_window_stop_reason_maps_to_the_wire_name():
    _, message = _run([ev.TextDelta("x"), ev.Done("context_window", ev.Usage(1, 1, 0))])
    assert message.stop_reason == "model_context_window_exceeded"


def test_message_start_and_message_delta_report_the_same_input_usage():
    wire, _ = _run(
        [ev.TextDelta("x"), ev.Done("end_turn", ev.Usage(input_tokens=10, output_tokens=1, cached_tokens=4))],
        admitted=ev.Usage(input_tokens=10, output_tokens=0, cached_tokens=4),
    )
    start, delta = wire[0].message.usage, wire[-2].usage
    assert (start.input_tokens, start.cache_read_input_tokens) == (6, 4)
    assert (delta.input_tokens, delta.cache_read_input_tokens) == (6, 4)
