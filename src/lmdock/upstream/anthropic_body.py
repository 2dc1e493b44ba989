"""A core ChatRequest as an Anthropic count_tokens body, for counting on an upstream lmdock node."""

from __future__ import annotations

from typing import Any

from lmdock.core.request import ChatRequest


def anthropic_count_body(req: ChatRequest, model: str) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, block: dict[str, Any]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": role, "content": [block]})

    for m in req.messages:
        if m.role == "system":
            if not messages:
                system.append(m.content)
            else:
                add("user", {"type": "text", "text": m.content})
        elif m.role == "tool":
            add(
                "user",
                {
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id or "",
                    "content": m.content,
                    "is_error": m.is_error,
                },
            )
        elif m.role == "assistant":
            if m.reasoning:
                add("assistant", {"type": "thinking", "thinking": m.reasoning, "signature": ""})
            if m.content:
                add("assistant", {"type": "text", "text": m.content})
            for c in m.tool_calls:
                add("assistant", {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})
        elif m.content:
            add("user", {"type": "text", "text": m.content})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        body["system"] = "\n\n".join(system)
    if req.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in req.tools
        ]
        choice = req.tool_choice
        body["tool_choice"] = {
            "type": choice.mode,
            **({"name": choice.name} if choice.mode == "tool" else {}),
        }
    return body
