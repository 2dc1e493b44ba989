"""/v1/messages through the official anthropic SDK, strict response validation, real default model."""

from __future__ import annotations

import anthropic
import pytest

# anthropic 2.x dropped sampling parameters from create(); older clients still send them
GREEDY = {"extra_body": {"temperature": 0.0}}


def test_create_returns_a_complete_message(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="qwen2.5-coder-0.5b-instruct",
        max_tokens=40,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
        **GREEDY,
    )
    assert msg.id.startswith("msg_")
    assert msg.model == "qwen2.5-coder-0.5b-instruct"
    assert msg.role == "assistant"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text.strip()
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 5
    assert 0 < msg.usage.output_tokens <= 40
    assert msg._request_id and msg._request_id.startswith("req_")


def test_claude_model_names_resolve_to_the_default_model(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "Hi"}], **GREEDY
    )
    assert msg.model == "claude-sonnet-4-6"
    assert msg.usage.output_tokens > 0


def test_max_tokens_stop_reason(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=3,
        messages=[{"role": "user", "content": "Count from one to fifty in words."}],
        **GREEDY,
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 3


def test_stream_accumulates_to_the_json_answer(client: anthropic.Anthropic):
    params = dict(
        model="default",
        max_tokens=30,
        system="You are terse.",
        messages=[{"role": "user", "content": "Name three colors."}],
        **GREEDY,
    )
    plain = client.messages.create(**params)
    with client.messages.stream(**params) as stream:
        deltas = [text for text in stream.text_stream]
        final = stream.get_final_message()
    assert "".join(deltas) == final.content[0].text
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in plain.content]
    assert final.stop_reason == plain.stop_reason
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_stop_sequence_is_reported_and_not_emitted(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=60,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        stop_sequences=["5"],
        **GREEDY,
    )
    assert msg.stop_reason == "stop_sequence"
    assert msg.stop_sequence == "5"
    assert "5" not in msg.content[0].text
    assert "4" in msg.content[0].text


def test_stop_sequence_in_stream(client: anthropic.Anthropic):
    with client.messages.stream(
        model="default",
        max_tokens=60,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        stop_sequences=["5"],
        **GREEDY,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "5"
    assert "5" not in text


def test_assistant_prefill_is_continued(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=10,
        messages=[
            {"role": "user", "content": "What is the capital of France? Answer with one word."},
            {"role": "assistant", "content": "The capital of France is"},
        ],
        **GREEDY,
    )
    assert "Paris" in msg.content[0].text


def test_system_blocks_mid_conversation_system_and_unknown_fields_are_accepted(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=8,
        system=[
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=ab12c;"},
            {"type": "text", "text": "You answer briefly.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "user",
                "content": [{"type": "mystery_block", "payload": 1}, {"type": "text", "text": "there"}],
            },
            {"role": "system", "content": "Reply in English."},
            {"role": "user", "content": "Say ok."},
        ],
        metadata={"user_id": "user_abc"},
        extra_body={
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "medium"},
            "some_future_field": {"a": 1},
            "temperature": 0.0,
        },
        extra_headers={"anthropic-beta": "claude-code-20250219,unknown-beta-2099-01-01"},
        extra_query={"beta": "true"},
    )
    assert msg.usage.output_tokens > 0


def test_count_tokens_equals_usage_input_tokens(client: anthropic.Anthropic):
    params = dict(
        model="default",
        system="You are a counting assistant. " + "Nonce 7419. ",
        messages=[{"role": "user", "content": "How many tokens is this request? Nonce 7419."}],
    )
    counted = client.messages.count_tokens(**params)
    msg = client.messages.create(max_tokens=2, **params, **GREEDY)
    total = msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == total


def test_models_list_paginates_and_ends(client: anthropic.Anthropic):
    models = list(client.models.list(limit=1))
    assert models and models[0].id == "qwen2.5-coder-0.5b-instruct"
    page = client.models.list(limit=1000)
    assert page.has_more is False
    assert page.last_id == page.data[-1].id
    after = client.models.list(after_id=page.last_id)
    assert after.data == [] and after.has_more is False
    one = client.models.retrieve("qwen2.5-coder-0.5b-instruct")
    assert one.id == "qwen2.5-coder-0.5b-instruct" and one.type == "model"


@pytest.mark.parametrize(
    ("kwargs", "message_part"),
    [
        ({"max_tokens": 10, "messages": []}, "messages"),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": -5, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 10, "messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"max_tokens": "ten", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 10, "messages": [{"role": "user"}]}, "content"),
        ({"max_tokens": 10, "messages": "hello"}, "messages"),
        ({"max_tokens": 10, "messages": ["hi"]}, "messages"),
        (
            {
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
                "extra_body": {"temperature": 7},
            },
            "temperature",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_are_400_with_the_field_named(client, kwargs, message_part, stream):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="default", stream=stream, **kwargs)
    assert err.value.status_code == 400
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert message_part in body["error"]["message"]
    assert err.value.request_id and err.value.request_id.startswith("req_")


def test_missing_max_tokens_is_400(server):
    import httpx

    r = httpx.post(f"{server.base_url}/v1/messages", json={"model": "default", "messages": []})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("max_tokens")


def test_unknown_model_is_404_listing_models(client: anthropic.Anthropic):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(
            model="gpt-imaginary", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.body["error"]["type"] == "not_found_error"
    assert "qwen2.5-coder-0.5b-instruct" in err.value.body["error"]["message"]


def test_prompt_too_long_has_the_wording_claude_code_compacts_on(client: anthropic.Anthropic):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="default", max_tokens=5, messages=[{"role": "user", "content": "word " * 9000}]
        )
    message = err.value.body["error"]["message"]
    assert message.startswith("prompt is too long: ") and message.endswith(" tokens > 8192 maximum")


def test_max_tokens_beyond_the_context_is_clamped(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=1_000_000,
        messages=[{"role": "user", "content": "Reply with just: ok"}],
        **GREEDY,
        timeout=600,
    )
    assert msg.stop_reason in ("end_turn", "model_context_window_exceeded")
