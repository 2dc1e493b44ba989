"""Anthropic request -> core ChatRequest: content blocks to chat-template messages."""

from __future__ import annotations

from typing import Any

from lmdock.api.anthropic.schema import CountTokensParams, MessageCreateParams, MessageParam
from lmdock.api.anthropic.signature import verify_thinking
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import (
    ChatRequest,
    Message,
    SamplingParams,
    ThinkingConfig,
    Tool,
    ToolCall,
    ToolChoice,
)

_IMAGE_PLACEHOLDER = "[image omitted: this model has no vision support]"


def _text_of(content: Any) -> str:
    """Flatten tool_result / document content (string or block list) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [_block_text(block) for block in content if isinstance(block, dict)]
    return "\n".join(p for p in parts if p)


def _block_text(block: dict[str, Any]) -> str | None:
    """The text a content block stands for in a prompt (None for blocks that are not content)."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "image":
        return _IMAGE_PLACEHOLDER
    if kind == "document":
        return _document_text(block)
    if kind == "search_result":
        return _text_of(block.get("content"))
    return None


def _document_text(block: dict[str, Any]) -> str:
    source = block.get("source") or {}
    if source.get("type") == "text":
        return str(source.get("data", ""))
    if source.get("type") == "content":
        return _text_of(source.get("content"))
    return "[document omitted]"


def _user_messages(blocks: list[dict[str, Any]]) -> list[Message]:
    """A user turn: tool results become tool messages (in order), the rest one user message."""
    out: list[Message] = []
    text: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "tool_result":
            out.append(
                Message(
                    role="tool",
                    content=_text_of(block.get("content")),
                    tool_call_id=str(block.get("tool_use_id", "")),
                    is_error=bool(block.get("is_error")),
                )
            )
        elif (part := _block_text(block)) is not None:
            text.append(part)
    if text:
        out.append(Message(role="user", content="\n\n".join(text)))
    return out


def _assistant_message(blocks: list[dict[str, Any]]) -> Message:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking = str(block.get("thinking", ""))
            if verify_thinking(thinking, str(block.get("signature", ""))):
                reasoning.append(thinking)
        elif kind in ("tool_use", "server_tool_use"):
            args = block.get("input")  # an object: the schema parsed a JSON string already
            calls.append(
                ToolCall(
                    id=str(block.get("id", "")),
                    name=str(block.get("name", "")),
                    arguments=args if isinstance(args, dict) else {},
                )
            )
    return Message(
        role="assistant",
        content="".join(text),
        reasoning="\n".join(reasoning) or None,
        tool_calls=calls,
    )


def _blocks(message: MessageParam) -> list[dict[str, Any]]:
    """A message's blocks as plain dicts (validated by the schema, so every known field has its type)."""
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}]
    return [b.model_dump() for b in message.content]


def _merge_same_role(messages: list[MessageParam]) -> list[tuple[str, list[dict[str, Any]]]]:
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for m in messages:
        if turns and turns[-1][0] == m.role:
            turns[-1][1].extend(_blocks(m))
        else:
            turns.append((m.role, _blocks(m)))
    return turns


def _messages(params: CountTokensParams) -> list[Message]:
    out: list[Message] = []
    system = params.system
    if isinstance(system, str) and system:
        out.append(Message(role="system", content=system))
    elif isinstance(system, list) and system:
        out.append(Message(role="system", content="\n\n".join(b.text for b in system)))
    tool_names: dict[str, str] = {}
    for role, blocks in _merge_same_role(params.messages):
        if role == "system":
            out.append(Message(role="system", content=_text_of(blocks)))
        elif role == "assistant":
            msg = _assistant_message(blocks)
            tool_names.update({c.id: c.name for c in msg.tool_calls})
            out.append(msg)
        else:
            for msg in _user_messages(blocks):
                if msg.role == "tool":
                    msg.name = tool_names.get(msg.tool_call_id or "")
                out.append(msg)
    return out


def _tools(params: CountTokensParams) -> list[Tool]:
    tools = []
    for t in params.tools or []:
        if t.input_schema is None:  # Anthropic-defined server tools have no schema: unsupported here
            continue
        tools.append(Tool(name=t.name, description=t.description or "", parameters=t.input_schema))
    return tools


def _tool_choice(params: CountTokensParams, tools: list[Tool]) -> ToolChoice:
    choice = params.tool_choice
    if choice is None:
        return ToolChoice(mode="auto" if tools else "none")
    parallel = not choice.disable_parallel_tool_use
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice.name: Field required", param="tool_choice.name")
        if choice.name not in {t.name for t in tools}:
            raise InvalidRequest(f"tool_choice.name: tool '{choice.name}' is not in tools")
    if choice.type in ("any", "tool") and not tools:
        raise InvalidRequest(f"tool_choice: type '{choice.type}' requires tools")
    return ToolChoice(mode=choice.type, name=choice.name, parallel=parallel)


def _thinking(params: CountTokensParams) -> ThinkingConfig:
    effort = params.output_config.effort if params.output_config else None
    t = params.thinking
    if t is None:
        return ThinkingConfig(effort=effort)
    if t.type == "disabled":
        return ThinkingConfig(enabled=False, effort=effort)
    if t.type == "enabled":
        return ThinkingConfig(enabled=True, budget_tokens=t.budget_tokens, effort=effort)
    return ThinkingConfig(enabled=None if effort is None else effort != "low", effort=effort)


def _response_schema(params: CountTokensParams) -> dict[str, Any] | None:
    fmt = (params.output_config.format if params.output_config else None) or params.output_format
    if fmt is None:
        return None
    if fmt.type != "json_schema" or not isinstance(fmt.schema_, dict):
        raise InvalidRequest("output_config.format: expected {type: 'json_schema', schema: {...}}")
    return fmt.schema_


def to_chat_request(params: CountTokensParams) -> ChatRequest:
    """Build the protocol-neutral request (count_tokens passes a request without max_tokens)."""
    tools = _tools(params)
    is_create = isinstance(params, MessageCreateParams)
    sampling = SamplingParams()  # unset fields: the model's defaults (models/sampling_defaults.py)
    if is_create:
        sampling = SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    return ChatRequest(
        model=params.model,
        messages=_messages(params),
        max_tokens=params.max_tokens if is_create else 1,
        tools=tools,
        tool_choice=_tool_choice(params, tools),
        sampling=sampling,
        stop=list(params.stop_sequences or []) if is_create else [],
        thinking=_thinking(params),
        response_schema=_response_schema(params),
    )
