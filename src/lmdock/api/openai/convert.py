"""OpenAI request -> core ChatRequest: messages, tools, tool_choice, response_format, sampling."""

from __future__ import annotations

from typing import Any

from lmdock.api.openai.schema import (
    ChatCompletionParams,
    ChatMessageParam,
    FunctionToolCall,
    GenerationParams,
    NamedToolChoice,
    RefusalPart,
    SamplingFields,
    TextPart,
)
from lmdock.core import safejson
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import (
    ChatRequest,
    Message,
    SamplingParams,
    ThinkingConfig,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
)

_PLACEHOLDERS = {
    "image_url": "[image omitted: this model has no vision support]",
    "input_audio": "[audio omitted]",
    "file": "[file omitted]",
}


TextOrTokens = str | list[int]


def text_or_token_items(raw: str | list[str] | list[int] | list[list[int]], param: str) -> list[TextOrTokens]:
    """OpenAI's `prompt` / `input`: a string, a list of strings, token ids, or lists of token ids."""
    if isinstance(raw, str):
        return [raw]
    if not raw:
        raise InvalidRequest(f"{param}: must not be empty", param=param)
    if all(isinstance(x, int) for x in raw):
        return [list(raw)]  # type: ignore[arg-type]
    return list(raw)  # type: ignore[arg-type]


def sampling_of(params: SamplingFields) -> SamplingParams:
    """What the request set; the rest stays unset for the model's defaults (not OpenAI's documented
    temperature 1, on purpose: see models/sampling_defaults.py)."""
    sampling = SamplingParams()
    for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if value is not None:
            setattr(sampling, name, value)
    if params.repeat_penalty is not None:
        sampling.repeat_penalty = params.repeat_penalty
    sampling.seed = params.seed
    return sampling


MAX_TOP_LOGPROBS = 20


def check_unsupported(params: GenerationParams) -> None:
    """Refuse what lmdock cannot honour yet rather than answer something else."""
    if params.n != 1:
        raise InvalidRequest("n: only n=1 is supported", param="n")


def logprobs_of(params: GenerationParams) -> int | None:
    """How many alternatives per token to report (None: no logprobs). Chat completions ask with
    `logprobs: true` + `top_logprobs`; text completions with `logprobs: <int>`."""
    logprobs = getattr(params, "logprobs", None)
    top = getattr(params, "top_logprobs", None)
    if isinstance(logprobs, bool) or logprobs is None:  # chat completions
        if top is not None and not logprobs:
            raise InvalidRequest("top_logprobs: requires logprobs to be true", param="top_logprobs")
        k, name = (top or 0) if logprobs else None, "top_logprobs"
    else:
        k, name = logprobs, "logprobs"
    if k is not None and not 0 <= k <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"{name}: must be between 0 and {MAX_TOP_LOGPROBS}", param=name)
    return k


def _text(content: str | list[Any] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append(part.text)
        elif isinstance(part, RefusalPart):
            parts.append(part.refusal)
        elif part.type in _PLACEHOLDERS:
            parts.append(_PLACEHOLDERS[part.type])
    return "\n".join(parts)


def _tool_call(raw: FunctionToolCall, where: str) -> ToolCall:
    args: Any = raw.function.arguments or "{}"
    param = f"{where}.function.arguments"
    if isinstance(args, str):
        args = safejson.loads(args, what=param)
    if not isinstance(args, dict):
        raise InvalidRequest(f"{param}: must be a JSON object", param=param)
    return ToolCall(id=raw.id, name=raw.function.name, arguments=args)


def _messages(messages: list[ChatMessageParam]) -> list[Message]:
    out: list[Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool results
    for i, m in enumerate(messages):
        text = _text(m.content)
        if m.role in ("system", "developer"):
            out.append(Message(role="system", content=text))
        elif m.role == "user":
            out.append(Message(role="user", content=text, name=m.name))
        elif m.role == "assistant":
            calls = [
                _tool_call(c, f"messages.{i}.tool_calls.{j}")
                for j, c in enumerate(m.tool_calls or [])
                if isinstance(c, FunctionToolCall)
            ]
            names.update({c.id: c.name for c in calls})
            out.append(
                Message(role="assistant", content=text, reasoning=m.reasoning_content, tool_calls=calls)
            )
        else:  # tool, or the legacy function role
            call_id = m.tool_call_id or ""
            out.append(
                Message(role="tool", content=text, tool_call_id=call_id, name=m.name or names.get(call_id))
            )
    return out


def _tool_choice(params: ChatCompletionParams, tools: list[Tool]) -> ToolChoice:
    parallel = params.parallel_tool_calls is not False
    choice = params.tool_choice or "auto"
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in {t.name for t in tools}:
            raise InvalidRequest(
                f"tool_choice.function.name: tool '{name}' is not in tools", param="tool_choice.function.name"
            )
        return ToolChoice(mode="tool", name=name, parallel=parallel)
    return string_tool_choice(choice, tools, parallel)


def string_tool_choice(choice: str, tools: list[Tool], parallel: bool) -> ToolChoice:
    """`none`, `auto` or `required` (chat completions and Responses alike): `required` is core's `any`,
    and `auto` without tools is `none`."""
    if choice == "required" and not tools:
        raise InvalidRequest("tool_choice: 'required' needs tools", param="tool_choice")
    mode: ToolMode = "any" if choice == "required" else "auto" if choice == "auto" and tools else "none"
    return ToolChoice(mode=mode, parallel=parallel)


def _response_schema(params: ChatCompletionParams) -> dict[str, Any] | None:
    fmt = params.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    schema = fmt.json_schema.schema_ if fmt.json_schema else None
    return schema if isinstance(schema, dict) else {"type": "object"}


def _thinking(params: ChatCompletionParams) -> ThinkingConfig:
    effort = params.reasoning_effort
    kwargs = params.chat_template_kwargs or {}
    enabled = kwargs.get("enable_thinking")
    if not isinstance(enabled, bool):
        enabled = False if effort == "none" else None
    return ThinkingConfig(enabled=enabled, effort=effort if effort != "none" else None)


def to_chat_request(params: ChatCompletionParams) -> ChatRequest:
    """Build the protocol-neutral request. `max_tokens` is 0 when the client set no limit: the route
    then allows the rest of the model's context."""
    check_unsupported(params)
    tools = [
        Tool(
            name=t.function.name,
            description=t.function.description or "",
            parameters=t.function.parameters or {"type": "object", "properties": {}},
        )
        for t in params.tools or []
    ]
    return ChatRequest(
        model=params.model,
        messages=_messages(params.messages),
        max_tokens=params.max_completion_tokens or params.max_tokens or 0,
        tools=tools,
        tool_choice=_tool_choice(params, tools),
        sampling=sampling_of(params),
        stop=params.stops,
        thinking=_thinking(params),
        response_schema=_response_schema(params),
        logprobs=logprobs_of(params),
    )
