"""Core messages to the Hugging Face chat-template convention, placed so earlier turns never re-render.

System messages: a mid-conversation system message that follows a user turn joins that turn (wrapped in
`<system-reminder>` tags): Claude Code sends its environment block right after the first user message,
and a small model answers a trailing system turn by echoing it. Elsewhere, a template that renders a
system message where it stands keeps it there; otherwise it becomes user text at its own position
(merged into the user turn it touches when the template cannot take two user turns in a row). Either way only the turn where it appears changes, so the rendered text
of everything before it stays byte-identical when turns are appended, and the prefix cache keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmdock.core.request import Message, Tool

BILLING_HEADER = "x-anthropic-billing-header:"
_CCH = "cch="


@dataclass(frozen=True)
class TemplateCaps:
    """What a template renders, found by probing it once."""

    system: bool = True  # a leading system message
    mid_system: bool = True  # a system message after other turns
    consecutive_users: bool = True  # two user turns in a row
    tools: bool = False  # the `tools` list


def normalize_billing_header(text: str) -> str:
    """Claude Code's attribution line changes `cch=XXXXX` every request; pin it so the prefix is stable."""
    if not text.startswith(BILLING_HEADER):
        return text
    line_end = text.find("\n")
    line_end = len(text) if line_end < 0 else line_end
    at = text.find(_CCH, 0, line_end)
    if at < 0:
        return text
    start = at + len(_CCH)
    return text[:start] + "fffff" + text[min(start + 5, line_end) :]


def template_tools(tools: list[Tool]) -> list[dict[str, Any]] | None:
    """Tools as templates expect them, in request order (a stable order keeps the prefix stable)."""
    if not tools:
        return None
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def template_messages(messages: list[Message], call_id: Callable[[str], str] = str) -> list[dict[str, Any]]:
    """HF-convention dicts: object arguments, `tool` results with id and name, "" rather than None."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "system":
            out.append({"role": "system", "content": normalize_billing_header(msg.content)})
        elif msg.role == "assistant":
            out.append(_assistant(msg, call_id))
        elif msg.role == "tool":
            out.append(_tool_result(msg, names, call_id))
        else:
            out.append({"role": msg.role, "content": msg.content})
    return out


def fit_to_template(messages: list[dict[str, Any]], caps: TemplateCaps) -> list[dict[str, Any]]:
    """System messages the template cannot place become user text where they stand; user turns in a
    row are joined for templates that insist on alternating roles."""
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if i > 0 and msg["role"] == "system" and out and out[-1]["role"] == "user":
            reminder = f"<system-reminder>\n{msg['content']}\n</system-reminder>"
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + reminder}
            continue
        if msg["role"] == "system" and not (caps.system if i == 0 else caps.mid_system):
            msg = {**msg, "role": "user"}
        if out and msg["role"] == "user" and out[-1]["role"] == "user" and not caps.consecutive_users:
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + msg["content"]}
        else:
            out.append(msg)
    return out


def _assistant(msg: Message, call_id: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": msg.content}
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": call_id(c.id), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    if msg.reasoning:
        out["reasoning_content"] = msg.reasoning  # Qwen3, DeepSeek, most reasoning templates
        out["thinking"] = msg.reasoning  # gpt-oss
    return out


def _tool_result(msg: Message, names: dict[str, str], call_id: Callable[[str], str]) -> dict[str, Any]:
    content = msg.content
    if msg.is_error and not content.lower().startswith("error"):
        content = "Error: " + content
    call = msg.tool_call_id or ""
    return {
        "role": "tool",
        "content": content,
        "tool_call_id": call_id(call),
        "name": msg.name or names.get(call, ""),
    }
