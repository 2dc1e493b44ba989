"""Responses API request -> core ChatRequest.

Input items are first normalised to the shape the API returns them in (`input_items`, stored history):
every item gets an id and a status, message content becomes a list of typed parts. The conversation is
then instructions + stored history + these items, mapped to chat-template messages: messages by role,
`function_call` items as the assistant's tool calls, `function_call_output` items as tool results,
`reasoning` items as the next assistant turn's reasoning.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmdock.api.openai.convert import MAX_TOP_LOGPROBS, sampling_of, string_tool_choice
from lmdock.api.openai.encode import new_id
from lmdock.api.responses.schema import ResponseCreateParams
from lmdock.core import safejson
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import (
    ChatRequest,
    Message,
    ThinkingConfig,
    Tool,
    ToolCall,
    ToolChoice,
)

Item = dict[str, Any]

_NAME = re.compile(r"^[a-zA-Z0-9_.:-]{1,128}$")
_ROLES = ("user", "system", "developer", "assistant")
_PLACEHOLDERS = {
    "input_image": "[image omitted: this model has no vision support]",
    "input_file": "[file omitted]",
    "input_audio": "[audio omitted]",
}
_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_ID_PREFIX = {
    "message": "msg_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "reasoning": "rs_",
}


def _bad(where: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {problem}", param=where)


# --- input items -------------------------------------------------------------------------------


def normalize_input(raw: str | list[Any] | None) -> list[Item]:
    """The request's `input` as a list of items in their returned shape (400 naming the bad item)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_message("user", [{"type": "input_text", "text": raw}], None)]
    return _unique_ids([_item(item, f"input.{i}") for i, item in enumerate(raw)])


def _item(item: Any, where: str) -> Item:
    if not isinstance(item, dict):
        raise _bad(where, "each input item must be an object")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message_item(item, where)
    if kind == "function_call":
        name, call_id, args = item.get("name"), item.get("call_id"), item.get("arguments", "{}")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}.name", "a function_call needs the function's name")
        if not isinstance(call_id, str) or not call_id:
            raise _bad(f"{where}.call_id", "a function_call needs a call_id")
        if not isinstance(args, str):
            args = json.dumps(args)
        _arguments(args, f"{where}.arguments")
        return {
            "type": "function_call",
            "id": _id_of(item, kind),
            "call_id": call_id,
            "name": name,
            "arguments": args,
            "status": "completed",
        }
    if kind == "function_call_output":
        return _output_item(item, where)
    if kind == "reasoning":
        summary = [
            {"type": "summary_text", "text": str(p.get("text", ""))}
            for p in _list_of(item.get("summary"), f"{where}.summary")
            if isinstance(p, dict)
        ]
        content = [
            {"type": "reasoning_text", "text": str(p.get("text", ""))}
            for p in _list_of(item.get("content"), f"{where}.content")
            if isinstance(p, dict)
        ]
        out: Item = {"type": "reasoning", "id": _id_of(item, kind), "summary": summary}
        if content:
            out["content"] = content
        if isinstance(item.get("encrypted_content"), str):
            out["encrypted_content"] = item["encrypted_content"]
        return out
    if kind is None:
        raise _bad(
            f"{where}.type", "missing: expected message, function_call, function_call_output or reasoning"
        )
    raise _bad(
        f"{where}.type",
        f"unsupported input item type {kind!r}: lmdock accepts message, function_call, "
        "function_call_output and reasoning items",
    )


def _output_item(item: Item, where: str) -> Item:
    """A tool's output: the answer to a call (`call_id`), or output a client adds on its own, named by
    the tool that produced it (`name`, `namespace`; Codex's goal context arrives so)."""
    call_id, name, output = item.get("call_id"), item.get("name"), item.get("output")
    if not (isinstance(call_id, str) and call_id) and not (isinstance(name, str) and name):
        raise _bad(
            f"{where}.call_id", "a function_call_output needs the call_id it answers (or the tool's name)"
        )
    if not isinstance(output, str | list):
        raise _bad(f"{where}.output", "must be a string or a list of content parts")
    if isinstance(output, list):
        _parts_text(output, f"{where}.output")
    out: Item = {"type": "function_call_output", "id": _id_of(item, "function_call_output")}
    for key in ("call_id", "name", "namespace"):
        if isinstance(item.get(key), str) and item[key]:
            out[key] = item[key]
    return {**out, "output": output, "status": "completed"}


def _list_of(value: Any, where: str) -> list[Any]:
    """An optional list field (absent or null: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, "must be a list")
    return value


def _unique_ids(items: list[Item]) -> list[Item]:
    """Input items are listed and paged by id (`input_items?after=`), so an id may appear once."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item["id"] in seen:
            raise _bad(
                f"input.{i}.id", f"duplicate item id {item['id']!r}: each input item's id must be unique"
            )
        seen.add(item["id"])
    return items


def _id_of(item: Item, kind: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and given else new_id(_ID_PREFIX[kind])


def _message_item(item: Item, where: str) -> Item:
    role = item.get("role")
    if role not in _ROLES:
        raise _bad(f"{where}.role", f"must be one of {', '.join(_ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        parts = [_part({"type": "input_text", "text": content}, role, f"{where}.content")]
    elif isinstance(content, list):
        parts = [_part(p, role, f"{where}.content.{j}") for j, p in enumerate(content)]
    else:
        raise _bad(f"{where}.content", "must be a string or a list of content parts")
    return _message(role, parts, item.get("id"))


def _message(role: str, parts: list[Item], given_id: Any) -> Item:
    item_id = given_id if isinstance(given_id, str) and given_id else new_id("msg_")
    return {"type": "message", "id": item_id, "role": role, "content": parts, "status": "completed"}


def _part(part: Any, role: str, where: str) -> Item:
    if not isinstance(part, dict):
        raise _bad(where, "each content part must be an object")
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _bad(f"{where}.type", "each content part needs a type (a string)")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.text", "must be a string")
        if role == "assistant":
            return {"type": "output_text", "text": text, "annotations": part.get("annotations") or []}
        return {"type": "input_text", "text": text}
    if kind == "refusal":
        return {"type": "refusal", "refusal": str(part.get("refusal", ""))}
    if kind == "input_image" and part.get("detail") is None:
        # OpenAI fills in "auto"; the SDK's ResponseInputImage cannot read an input_items answer without it
        return {**part, "detail": "auto"}
    if kind in _PLACEHOLDERS:
        return dict(part)
    raise _bad(f"{where}.type", f"unsupported content part type {kind!r}")


def _part_text(part: Item) -> str:
    kind = part.get("type")
    if not isinstance(kind, str):
        return ""
    if kind in _TEXT_PARTS:
        return str(part.get("text", ""))
    if kind == "refusal":
        return str(part.get("refusal", ""))
    return _PLACEHOLDERS.get(kind, "") if isinstance(kind, str) else ""


def _parts_text(parts: list[Any], where: str) -> str:
    out = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise _bad(f"{where}.{j}", "each content part must be an object")
        out.append(_part_text(part))
    return "\n".join(p for p in out if p)


def _arguments(args: str, where: str) -> dict[str, Any]:
    value = safejson.loads(args or "{}", what=where)
    if not isinstance(value, dict):
        raise _bad(where, "must be a JSON object")
    return value


def to_messages(items: list[Item]) -> list[Message]:
    """Normalised items -> chat-template messages."""
    out: list[Message] = []
    names: dict[str, str] = {}  # call_id -> function name, for tool results
    reasoning: list[str] = []  # reasoning waiting for the assistant turn it belongs to
    for item in items:
        kind = item["type"]
        if kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            reasoning.append("\n".join(str(p.get("text", "")) for p in parts))
        elif kind == "message":
            text = "\n".join(t for t in map(_part_text, item["content"]) if t)
            role = item["role"]
            if role == "assistant":
                out.append(Message("assistant", text, reasoning="\n".join(reasoning) or None))
                reasoning = []
            else:
                out.append(Message("system" if role in ("system", "developer") else "user", text))
        elif kind == "function_call":
            call = ToolCall(
                id=item["call_id"], name=item["name"], arguments=_arguments(item["arguments"], "input")
            )
            names[call.id] = call.name
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not reasoning:
                last.tool_calls.append(call)  # the same turn as the text (or calls) before it
            else:
                out.append(
                    Message("assistant", "", reasoning="\n".join(reasoning) or None, tool_calls=[call])
                )
                reasoning = []
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else _parts_text(output, "output")
            call_id = item.get("call_id")
            name = names.get(call_id) if call_id else item.get("name")
            out.append(Message("tool", text, tool_call_id=call_id, name=name))
    return out


# --- tools, formats, sampling ------------------------------------------------------------------


def _function_tool(tool: Any, where: str) -> Tool:
    if not isinstance(tool, dict):
        raise _bad(where, "each tool must be an object")
    name = tool.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _bad(f"{where}.name", "must be 1-128 letters, digits, _ . : or -")
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _bad(f"{where}.parameters", "must be a JSON Schema object")
    description = tool.get("description")
    return Tool(
        name=name,
        description=description if isinstance(description, str) else "",
        parameters=parameters or {"type": "object", "properties": {}},
    )


def tools_of(raw: list[dict[str, Any]] | None) -> list[Tool]:
    """Function tools, and the function tools grouped in a `namespace` tool (Codex sends its sub-agent
    tools that way); hosted tools (web_search, file_search, ...) are OpenAI services: a 400."""
    tools = []
    for i, tool in enumerate(raw or []):
        where = f"tools.{i}"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace":
            if not isinstance(tool.get("name"), str) or not _NAME.match(tool["name"]):
                raise _bad(f"{where}.name", "a namespace needs a name of 1-128 letters, digits, _ . : or -")
            for j, inner in enumerate(_list_of(tool.get("tools"), f"{where}.tools")):
                if not isinstance(inner, dict) or inner.get("type") != "function":
                    raise _bad(f"{where}.tools.{j}.type", "a namespace may hold function tools only")
                tools.append(_function_tool(inner, f"{where}.tools.{j}"))
            continue
        if kind != "function":
            raise _bad(
                f"{where}.type",
                f"unsupported tool type {kind!r}: lmdock runs function tools only (hosted tools such as "
                'web_search or file_search are OpenAI services; in Codex set web_search = "disabled")',
            )
        tools.append(_function_tool(tool, where))
    return tools


def namespaces_of(raw: list[dict[str, Any]] | None) -> dict[str, str]:
    """Function name -> its namespace, for the `namespace` field of the calls the model makes."""
    return {
        inner["name"]: tool["name"]
        for tool in raw or []
        if tool.get("type") == "namespace"
        for inner in tool.get("tools") or []
        if isinstance(inner, dict) and isinstance(inner.get("name"), str)
    }


def tool_choice_of(params: ResponseCreateParams, tools: list[Tool]) -> ToolChoice:
    parallel = params.parallel_tool_calls is not False
    choice = params.tool_choice if params.tool_choice is not None else "auto"
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise _bad(
                "tool_choice.type", f"unsupported tool_choice type {choice.get('type')!r}: use 'function'"
            )
        name = choice.get("name")
        if name not in {t.name for t in tools}:
            raise _bad("tool_choice.name", f"tool {name!r} is not in tools")
        return ToolChoice(mode="tool", name=name, parallel=parallel)
    if choice not in ("auto", "none", "required"):
        raise _bad("tool_choice", "must be 'auto', 'none', 'required' or a function choice")
    return string_tool_choice(choice, tools, parallel)


def response_schema_of(params: ResponseCreateParams) -> dict[str, Any] | None:
    fmt = params.text.format if params.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if not isinstance(fmt.schema_, dict):
        raise _bad("text.format.schema", "json_schema format needs a schema object")
    return fmt.schema_


def thinking_of(params: ResponseCreateParams) -> ThinkingConfig:
    effort = params.reasoning.effort if params.reasoning else None
    if effort is None:
        return ThinkingConfig()
    if effort == "none":
        return ThinkingConfig(enabled=False)
    return ThinkingConfig(enabled=True, effort=effort)


def to_chat_request(params: ResponseCreateParams, items: list[Item]) -> ChatRequest:
    """The whole conversation (stored history + this request's items) as a core request.
    `max_tokens` is 0 when the client set no limit: the route then allows the rest of the context."""
    tools = tools_of(params.tools)
    messages = to_messages(items)
    if params.instructions:
        messages.insert(0, Message("system", params.instructions))
    if not any(m.role != "system" for m in messages):
        raise _bad("input", "needs at least one message or item (or a previous_response_id)")
    logprobs = None
    if params.wants_logprobs:
        logprobs = min(params.top_logprobs or 0, MAX_TOP_LOGPROBS)
    return ChatRequest(
        model=params.model,
        messages=messages,
        max_tokens=params.max_output_tokens or 0,
        tools=tools,
        tool_choice=tool_choice_of(params, tools),
        sampling=sampling_of(params),  # the same fields as chat completions; unset ones: model defaults
        stop=params.stops,
        thinking=thinking_of(params),
        response_schema=response_schema_of(params),
        logprobs=logprobs,
    )
