"""Speculative decoding through the HTTP APIs: a server started with `--spec-type ngram` answers what a
server started with `--spec-type none` answers, streamed or not, on both APIs and for a forced tool
call; the request log and /metrics count the draft tokens. Greedy texts are compared as tests/greedy.py
explains (equal, or departing only at a near-tie of the reference run)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from anthropic.types import Message

from lmdock.core.events import TokenLogprob
from tests.conftest import Server, start_server
from tests.e2e.test_sampling_defaults import QWEN, request_log
from tests.greedy import assert_same_or_tied

SOURCE = (Path(__file__).resolve().parents[2] / "bench" / "data" / "edit_source.txt").read_text()
EDIT = (
    f"Here is a Python file:\n\n```python\n{SOURCE}```\n\nRename every function to camelCase "
    "(load_items -> loadItems and so on) and give me the whole file back, changed only there."
)
N = 120
MESSAGES = [{"role": "user", "content": EDIT}]
GREEDY = {"temperature": 0.0}  # the pinned SDK takes it as an extra field


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("nospec"), "--spec-type", "none")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    """Speculating, whatever the default is."""
    srv = start_server(tmp_path_factory.mktemp("spec"), "--spec-type", "ngram")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def reference(plain: Server) -> list[TokenLogprob]:
    """The edit answer without speculation, token by token with the best two candidates."""
    reply = plain.openai().chat.completions.create(
        model=QWEN, messages=MESSAGES, max_tokens=N, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    return [TokenLogprob(c.token, c.logprob, [(t.token, t.logprob) for t in c.top_logprobs]) for c in content]


def counter(server: Server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    return sum(float(v) for v in re.findall(rf"^{name}_total\{{[^}}]*\}} (\S+)$", text, re.M))


def test_anthropic_answers_are_the_same_streamed_and_not(server: Server, reference):
    client = server.anthropic()
    reply = client.messages.create(model=QWEN, max_tokens=N, messages=MESSAGES, extra_body=GREEDY)
    assert_same_or_tied(reference, reply.content[0].text)
    with client.messages.stream(model=QWEN, max_tokens=N, messages=MESSAGES, extra_body=GREEDY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert_same_or_tied(reference, streamed)  # the stream's prompt came from the cache: other batch shapes
    assert final.usage.output_tokens == reply.usage.output_tokens == N  # emitted tokens, not proposals


def test_openai_answers_are_the_same_streamed_and_not(server: Server, reference):
    client = server.openai()
    reply = client.chat.completions.create(model=QWEN, messages=MESSAGES, max_tokens=N, temperature=0)
    assert_same_or_tied(reference, reply.choices[0].message.content or "")
    chunks = client.chat.completions.create(
        model=QWEN,
        messages=MESSAGES,
        max_tokens=N,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in chunks:
        parts.extend(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert_same_or_tied(reference, "".join(parts))
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens == N


HEAD = "\n".join(SOURCE.splitlines()[:36])
RENAMED = HEAD.replace("load_items", "read_items")
# The content is held to the renamed file by the schema: which text a small model would choose differs
# between CPUs' numerics (some write CSV rows instead), while a draft token the grammar forbids, if
# speculation let one through, would change the text.
WRITE_FILE = {
    "name": "write_file",
    "description": "Write a file to disk, replacing its contents.",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string", "enum": [RENAMED]}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
}
WRITE_ASK = [
    {
        "role": "user",
        "content": f"inventory.py:\n```python\n{HEAD}\n```\nRename load_items to read_items and write the "
        "whole file back to inventory.py.",
    }
]


def test_a_forced_tool_call_copies_the_file_through_verified_drafts(server: Server, plain: Server):
    for srv in (plain, server):
        reply, entry = logged_messages_request(
            srv,
            max_tokens=600,
            messages=WRITE_ASK,
            tools=[WRITE_FILE],
            tool_choice={"type": "tool", "name": "write_file"},
        )
        assert reply.stop_reason == "tool_use" and reply.content[-1].input["content"] == RENAMED
        accepted = entry["spec_accepted_tokens"]
        assert accepted > 100 if srv is server else accepted == 0  # most of the copy came from drafts


def spec_counters(server: Server) -> tuple[float, float]:
    return counter(server, "lmdock_spec_proposed_tokens"), counter(server, "lmdock_spec_accepted_tokens")


def logged_messages_request(server: Server, **params) -> tuple[Message, dict]:
    """A /v1/messages reply (greedy, the edit prompt unless `params` say otherwise) and its request-log
    entry."""
    params = {"model": QWEN, "messages": MESSAGES, "extra_body": GREEDY, **params}
    with request_log(server) as entries:
        reply = server.anthropic().messages.create(**params)
        while (entry := entries.get(timeout=300))["path"] != "/v1/messages":
            pass
    return reply, entry


def test_the_request_log_and_metrics_count_draft_tokens(server: Server, plain: Server):
    before = spec_counters(server)
    _, entry = logged_messages_request(server, max_tokens=N)
    proposed, accepted = entry["spec_proposed_tokens"], entry["spec_accepted_tokens"]
    assert 0 <= accepted <= proposed and accepted <= entry["output_tokens"]
    for _ in range(50):  # the worker's counters arrive with its next state report
        after = spec_counters(server)
        if after != before or not proposed:
            break
        time.sleep(0.1)
    assert (after[0] - before[0], after[1] - before[1]) == (proposed, accepted)
    assert logged_messages_request(plain, max_tokens=8)[1]["spec_proposed_tokens"] == 0
    assert counter(plain, "lmdock_spec_proposed_tokens") == 0
