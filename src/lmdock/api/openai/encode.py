"""Core generation events -> OpenAI wire objects: one ChatCompletion, or its stream of chunks.

Both come from one accumulator, so a streamed answer adds up to exactly the JSON answer. Wire objects
are the `openai` package's own types; reasoning travels in `reasoning_content` (an extra field the
types allow), as llama-server and LM Studio send it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCallUnion,
    ChatCompletionTokenLogprob,
)
from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import (
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
)
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkLogprobs
from openai.types.chat.chat_completion_message_function_tool_call import (
    ChatCompletionMessageFunctionToolCall,
    Function,
)
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_usage import CompletionUsage, PromptTokensDetails

from lmdock.core import events as ev

FinishReason = Literal["stop", "length", "tool_calls"]
FINISH_REASONS: dict[ev.StopReason, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "context_window": "length",
    "tool_use": "tool_calls",
}


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def wire_usage(usage: ev.Usage) -> CompletionUsage:
    """OpenAI counts the whole prompt; the cached part is a detail of it."""
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def sse_data(payload: Any) -> str:
    """One `data:` frame; OpenAI streams have no event names."""
    data = payload if isinstance(payload, dict) else payload.model_dump(mode="json", exclude_unset=True)
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def token_logprobs(entries: list[ev.TokenLogprob]) -> list[ChatCompletionTokenLogprob]:
    """Core logprob entries as chat completions carry them (with each token's UTF-8 bytes)."""
    return [
        ChatCompletionTokenLogprob(
            token=e.token,
            bytes=list(e.token.encode()),
            logprob=e.logprob,
            top_logprobs=[TopLogprob(token=t, bytes=list(t.encode()), logprob=lp) for t, lp in e.top],
        )
        for e in entries
    ]


class ChatEncoder:
    """Accumulates one generation; `feed()` also returns the chunks to stream for each event."""

    def __init__(self, model: str, *, include_usage: bool = False, logprobs: bool = False) -> None:
        self.id = new_id("chatcmpl-")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.logprobs: list[ChatCompletionTokenLogprob] | None = [] if logprobs else None
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ChatCompletionMessageFunctionToolCall] = []
        self._call_index: dict[int, int] = {}
        self.done: ev.Done | None = None

    def first_chunk(self) -> ChatCompletionChunk:
        return self._chunk(ChoiceDelta(role="assistant", content=""))

    def feed(self, event: ev.GenerationEvent) -> list[ChatCompletionChunk]:
        if isinstance(event, ev.TextDelta) and (event.text or event.logprobs):
            self.text.append(event.text)
            entries = None
            if self.logprobs is not None:
                entries = token_logprobs(event.logprobs or [])
                self.logprobs.extend(entries)
            return [self._chunk(ChoiceDelta(content=event.text), logprobs=entries)]
        if isinstance(event, ev.ThinkingDelta) and event.text:
            self.reasoning.append(event.text)
            # not in OpenAI's types: the field vLLM, llama-server and DeepSeek send (kept as an extra)
            return [self._chunk(ChoiceDelta.model_validate({"reasoning_content": event.text}))]
        if isinstance(event, ev.ToolCallStart):
            index = self._call_index[event.index] = len(self.calls)
            call_id = "call_" + event.id.removeprefix("toolu_")
            self.calls.append(
                ChatCompletionMessageFunctionToolCall(
                    id=call_id, type="function", function=Function(name=event.name, arguments="")
                )
            )
            start = ChoiceDeltaToolCall(
                index=index,
                id=call_id,
                type="function",
                function=ChoiceDeltaToolCallFunction(name=event.name, arguments=""),
            )
            return [self._chunk(ChoiceDelta(tool_calls=[start]))]
        if isinstance(event, ev.ToolCallArgsDelta):
            index = self._call_index[event.index]
            self.calls[index].function.arguments += event.json
            piece = ChoiceDeltaToolCall(
                index=index, function=ChoiceDeltaToolCallFunction(arguments=event.json)
            )
            return [self._chunk(ChoiceDelta(tool_calls=[piece]))]
        if isinstance(event, ev.ToolCallEnd):
            call = self.calls[self._call_index[event.index]]
            call.function.arguments = json.dumps(event.arguments)  # what the deltas add up to
            return []
        if isinstance(event, ev.Done):
            self.done = event
            chunks = [self._chunk(ChoiceDelta(), finish_reason=FINISH_REASONS[event.stop_reason])]
            if self.include_usage:
                chunks.append(self._chunk(None, usage=wire_usage(event.usage)))
            return chunks
        return []

    def _chunk(
        self,
        delta: ChoiceDelta | None,
        *,
        finish_reason: FinishReason | None = None,
        usage: CompletionUsage | None = None,
        logprobs: list[ChatCompletionTokenLogprob] | None = None,
    ) -> ChatCompletionChunk:
        choices = [] if delta is None else [ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)]
        if logprobs is not None:
            choices[0].logprobs = ChunkLogprobs(content=logprobs, refusal=None)
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
        )
        if self.include_usage:
            chunk.usage = usage  # null on every chunk but the last, as OpenAI sends it
        return chunk

    def completion(self) -> ChatCompletion:
        """The whole answer, after Done has been fed."""
        assert self.done is not None
        calls: list[ChatCompletionMessageToolCallUnion] = [*self.calls]
        message = ChatCompletionMessage(
            role="assistant",
            content="".join(self.text) if self.text or not self.calls else None,
            tool_calls=calls or None,
        )
        if self.reasoning:
            message.reasoning_content = "".join(self.reasoning)  # type: ignore[attr-defined]
        return ChatCompletion(
            id=self.id,
            object="chat.completion",
            created=self.created,
            model=self.model,
            choices=[
                Choice(
                    index=0,
                    message=message,
                    finish_reason=FINISH_REASONS[self.done.stop_reason],
                    logprobs=None
                    if self.logprobs is None
                    else ChoiceLogprobs(content=self.logprobs, refusal=None),
                )
            ],
            usage=wire_usage(self.done.usage),
        )
