"""Chunk reuse through the Messages API, on prompts built like Claude Code's: the same long tool block
after a system text that names a different project path in the middle. A second folder's request reads
the tool block from the cache (moved to its new positions) and answers as the cold run does."""

from __future__ import annotations

import anthropic

from tests.conftest import Server

QWEN = "qwen2.5-coder-0.5b-instruct"
GREEDY = {"extra_body": {"temperature": 0.0}}
QUESTION = "What is the capital of France? Answer with one word."


def _tools() -> list[dict]:
    return [
        {
            "name": f"ledger_{i}",
            "description": (
                f"Reads ledger {i} of the harbour archive, checks its checksums and returns the entries "
                "whose berth matches the query, sorted by arrival time, at most `limit` of them."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "berth name or number"},
                    "limit": {"type": "integer", "description": "maximum entries (default 20)"},
                },
                "required": ["query"],
            },
        }
        for i in range(12)
    ]


def _system(project: str) -> str:
    return (
        "You are a coding agent working in a terminal. Follow the user's instructions and use the tools.\n"
        f"You have a persistent memory at `/home/dev/.agent/projects/{project}/memory/`; the working "
        f"directory is /home/dev/{project}.\nKeep answers short."
    )


def _ask(client: anthropic.Anthropic, project: str) -> anthropic.types.Message:
    return client.messages.create(
        model=QWEN,
        max_tokens=8,
        system=_system(project),
        tools=_tools(),
        tool_choice={"type": "none"},
        messages=[{"role": "user", "content": QUESTION}],
        **GREEDY,
    )


def _text(msg: anthropic.types.Message) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def test_a_second_folder_reuses_the_tool_block_and_answers_as_cold(
    server: Server, client: anthropic.Anthropic
):
    tool_block = (
        client.messages.count_tokens(
            model=QWEN, tools=_tools(), messages=[{"role": "user", "content": "x"}]
        ).input_tokens
        - client.messages.count_tokens(model=QWEN, messages=[{"role": "user", "content": "x"}]).input_tokens
    )
    assert tool_block > 500
    cold = _ask(client, "beta-service-api")  # computed cold (nothing like it is cached yet)
    first = _ask(client, "alpha-notes")  # another folder: takes the tool block over from `cold`
    again = _ask(client, "beta-service-api")  # and back
    for msg in (first, again):
        assert msg.usage.cache_read_input_tokens >= 0.8 * tool_block, (msg.usage, tool_block)
        assert msg.usage.input_tokens < 0.2 * tool_block
    assert _text(again) == _text(cold)
    assert _text(cold).strip()
