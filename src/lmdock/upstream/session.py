"""The session surface of an upstream model: the same `prepare` / `count_tokens` / `prepare_raw` a local
model's ChatSession offers, so the API layers cannot tell the two apart.

Two ways to talk to an upstream:
- chat (default): an OpenAI chat/completions request; the upstream renders its template and parses its
  tool calls, lmdock converts both ways and keeps its own guarantees on the way back (event order,
  Anthropic tool ids, stop sequences, recovery of a bare-JSON tool call).
- raw: lmdock renders the prompt with the model's template (from a configured GGUF or llama-server's
  /props) and sends /v1/completions; lmdock's parser reads the text back, and with `grammar = "lark"`
  lmdock's llguidance grammar constrains it upstream (vLLM / SGLang with the guidance backend).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from lmdock.chat import ChatFormatter, OutputParser, RenderedPrompt
from lmdock.chat.parser import ParserSpec
from lmdock.chat.session import PreparedChat
from lmdock.core.errors import InvalidRequest, ModelLoadError, ModelUnavailable
from lmdock.core.events import Done, GenerationEvent, Usage
from lmdock.core.request import ChatRequest, SamplingParams
from lmdock.engine.detokenizer import StopMatcher
from lmdock.engine.vocab import Vocab
from lmdock.upstream.openai_chat import (
    CallGate,
    ChatTranslator,
    StreamResult,
    chat_body,
    explicit_sampling,
    read_usage,
    translate,
)
from lmdock.upstream.router import Node, affinity_key
from lmdock.upstream.stream import Opened
from lmdock.upstream.transport import Upstream

log = logging.getLogger(__name__)


def _plain(text: str = "") -> RenderedPrompt:
    return RenderedPrompt(text, None, [], False, lambda: OutputParser(ParserSpec()))


@dataclass(kw_only=True)
class UpstreamChat(PreparedChat):
    """A request an upstream node has accepted and started answering."""

    opened: Opened
    make_events: Callable[[AsyncIterator[dict[str, Any]]], AsyncIterator[GenerationEvent]]

    async def admitted(self) -> Usage:
        """The upstream has answered already: nothing to wait for."""
        return Usage(input_tokens=self.input_tokens, output_tokens=0)

    async def events(self) -> AsyncIterator[GenerationEvent]:
        opened = self.opened
        chunks = opened.chunks()
        try:
            async for event in self.make_events(chunks):
                if isinstance(event, Done):
                    if not event.usage.input_tokens:
                        event.usage.input_tokens = self.input_tokens
                    _account(opened.node, event)
                else:
                    self.note_output()
                yield event
        finally:
            await chunks.aclose()
            opened.release()

    def cancel(self) -> None:
        """The client went away, maybe before `events()` ran: close the upstream stream now, so the
        upstream stops generating for nobody."""
        self.opened.release()


def _account(node: Node, done: Done) -> None:
    stats = node.stats
    stats.completed += 1
    stats.prompt_tokens += done.usage.input_tokens
    stats.generated_tokens += done.usage.output_tokens
    stats.cached_tokens += done.usage.cached_tokens


class UpstreamSession:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._formatter: ChatFormatter | None = None
        self._vocab: Vocab | None = None  # of the configured `tokenizer`, loaded on first use
        self._closed = False

    async def vocab(self) -> Vocab | None:
        """The configured local GGUF vocabulary, or None."""
        if self.spec.tokenizer is None:
            return None
        if self._vocab is None:
            try:
                vocab = await asyncio.to_thread(Vocab, self.spec.tokenizer, self.spec.name)
            except ModelLoadError as exc:
                raise InvalidRequest(f"upstream model '{self.spec.name}': tokenizer: {exc.message}") from None
            if self._vocab is None and not self._closed:
                self._vocab = vocab
            else:  # loaded twice at once, or closed meanwhile: keep one
                await asyncio.to_thread(vocab.close)
        if self._vocab is None:
            raise ModelUnavailable(f"model '{self.spec.name}' is shutting down")
        return self._vocab

    async def close(self) -> None:
        """Free the local vocabulary (waits for counts in progress)."""
        self._closed = True
        vocab, self._vocab = self._vocab, None
        if vocab is not None:
            await asyncio.to_thread(vocab.close)

    @property
    def spec(self):
        return self.upstream.spec

    # --- chat ----------------------------------------------------------------------------------------

    def _chat_body(self, req: ChatRequest, max_tokens: int | None) -> dict[str, Any]:
        return chat_body(
            req,
            self.upstream.served_model,
            exact_tool_choice=self.upstream.info.kind == "lmdock",
            max_tokens=max_tokens,
        )

    async def prepare(self, req: ChatRequest) -> PreparedChat:
        await self.upstream.ensure_probed()
        if self.spec.prompt == "raw":
            return await self._prepare_rendered(req)
        key = affinity_key(req)
        counting = asyncio.create_task(self._quiet_count(req))  # for message_start, beside the request
        try:
            opened = await self.upstream.open(
                "/v1/chat/completions", partial(self._chat_body, req), key, req.max_tokens or None
            )
        except BaseException:
            counting.cancel()
            raise
        tools = [t.name for t in req.tools] if req.tool_choice.mode != "none" else []
        translator = ChatTranslator(tools, list(req.stop), parallel=req.tool_choice.parallel)
        return UpstreamChat(
            input_tokens=await self._counted(counting),
            rendered=_plain(),
            opened=opened,
            make_events=lambda chunks: translate(chunks, translator, opened.clamped),
        )

    async def _quiet_count(self, req: ChatRequest) -> int:
        try:
            return await self.count_tokens(req)
        except Exception:  # counting is a courtesy here: the final usage has the upstream's own number
            return 0

    async def _quiet_count_text(self, text: str) -> int:
        try:
            return await self._count_text(text)
        except Exception:
            return 0

    @staticmethod
    async def _counted(task: asyncio.Task[int]) -> int:
        try:
            return await asyncio.wait_for(task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            return 0

    async def count_tokens(self, req: ChatRequest) -> int:
        await self.upstream.ensure_probed()
        if self.spec.prompt == "raw":
            rendered = await self._render(req)
            return await self._count_text(rendered.text)
        info = self.upstream.info
        body = self._chat_body(req, None)
        for k in ("stream", "stream_options"):
            body.pop(k, None)
        if info.flavor == "llama.cpp":
            applied = await self.upstream.post_json("/apply-template", body, affinity_key(req))
            if isinstance(applied, dict) and isinstance(applied.get("prompt"), str):
                return await self._count_text(applied["prompt"], add_special=True)
        elif info.flavor == "lmdock":
            from lmdock.upstream.anthropic_body import anthropic_count_body

            counted = await self.upstream.post_json(
                "/v1/messages/count_tokens", anthropic_count_body(req, self.upstream.served_model)
            )
            if isinstance(counted, dict) and isinstance(counted.get("input_tokens"), int):
                return counted["input_tokens"]
        else:
            body["add_generation_prompt"] = not body.pop("continue_final_message", False)
            counted = await self.upstream.post_json("/tokenize", body)
            if isinstance(counted, dict):
                if isinstance(counted.get("count"), int):
                    return counted["count"]
                if isinstance(counted.get("tokens"), list):
                    return len(counted["tokens"])
        vocab = await self.vocab()
        if vocab is not None:  # the same model's template and vocabulary, locally
            rendered = await self._render(req)
            return len(await asyncio.to_thread(vocab.tokenize, rendered.text))
        raise InvalidRequest(
            f"count_tokens: upstream model '{self.spec.name}' has no tokenizer endpoint lmdock can use; "
            "set `tokenizer` to a local GGUF of the same model in its upstreams.toml entry"
        )

    async def _count_text(self, text: str, add_special: bool = False) -> int:
        vocab = await self.vocab()
        if vocab is not None:
            return len(await asyncio.to_thread(vocab.tokenize, text, add_special=add_special))
        counted = await self.upstream.post_json(
            "/tokenize",
            {
                "model": self.upstream.served_model,
                "content": text,  # llama-server
                "prompt": text,  # vLLM
                "add_special": add_special,
                "add_special_tokens": add_special,
                "parse_special": True,
            },
        )
        if isinstance(counted, dict):
            if isinstance(counted.get("count"), int):
                return counted["count"]
            if isinstance(counted.get("tokens"), list):
                return len(counted["tokens"])
        raise InvalidRequest(
            f"count_tokens: upstream model '{self.spec.name}' has no /tokenize endpoint lmdock can use"
        )

    # --- raw: lmdock renders, the upstream continues text ---------------------------------------------

    async def _render(self, req: ChatRequest) -> RenderedPrompt:
        if self._formatter is None:
            info = self.upstream.info
            vocab = await self.vocab()
            if vocab is not None and vocab.chat_template:
                info.chat_template, info.bos_token, info.eos_token = (
                    vocab.chat_template,
                    vocab.bos_text,
                    vocab.eos_text,
                )
            if not info.chat_template:
                raise InvalidRequest(
                    f"upstream model '{self.spec.name}' is set to raw prompts but lmdock has no chat template "
                    "for it (set `tokenizer` to the model's GGUF; llama-server's /props also gives one)"
                )
            self._formatter = ChatFormatter(
                info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token
            )
        return await asyncio.to_thread(self._formatter.render, req)

    async def _prepare_rendered(self, req: ChatRequest) -> PreparedChat:
        rendered = await self._render(req)

        def body_for(max_tokens: int | None) -> dict[str, Any]:
            body = self._completion_body(rendered.text, max_tokens, req.sampling, list(rendered.stop))
            if self.spec.grammar == "lark" and rendered.grammar:
                body["structured_outputs"] = {"grammar": rendered.grammar}  # vLLM >= 0.10
                body["guided_grammar"] = rendered.grammar  # older vLLM
            return body

        counting = asyncio.create_task(self._quiet_count_text(rendered.text))
        try:
            opened = await self.upstream.open(
                "/v1/completions", body_for, affinity_key(req), req.max_tokens or None
            )
        except BaseException:
            counting.cancel()
            raise
        stopper = StopMatcher(list(req.stop))
        return UpstreamChat(
            input_tokens=await self._counted(counting),
            rendered=rendered,
            opened=opened,
            make_events=lambda chunks: _text_events(
                chunks, rendered.new_parser(), stopper, opened.clamped, CallGate(req.tool_choice.parallel)
            ),
        )

    def _completion_body(
        self, prompt: str | list[int], max_tokens: int | None, sampling: SamplingParams, stop: list[str]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.upstream.served_model,
            "prompt": prompt,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens:
            body["max_tokens"] = max_tokens
        if stop:
            body["stop"] = stop
        body.update(explicit_sampling(sampling))
        return body

    async def prepare_raw(
        self,
        prompt: str | list[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop: list[str],
        logprobs: int | None = None,
    ) -> PreparedChat:
        """OpenAI /v1/completions passed through: the prompt as-is, stop sequences applied by lmdock."""
        if not prompt:
            raise InvalidRequest("prompt: must not be empty", param="prompt")
        if logprobs is not None:
            raise InvalidRequest(
                f"logprobs: not available from upstream model '{self.spec.name}'", param="logprobs"
            )
        opened = await self.upstream.open(
            "/v1/completions",
            lambda mt: self._completion_body(prompt, mt, sampling, []),
            None,
            max_tokens,
        )
        stopper = StopMatcher(list(stop))
        text = prompt if isinstance(prompt, str) else ""
        return UpstreamChat(
            input_tokens=0,
            rendered=_plain(text),
            opened=opened,
            make_events=lambda chunks: _text_events(
                chunks, OutputParser(ParserSpec()), stopper, opened.clamped
            ),
        )


async def _text_events(
    chunks: AsyncIterator[dict[str, Any]],
    parser: OutputParser,
    stopper: StopMatcher,
    clamped: bool,
    gate: CallGate | None = None,
) -> AsyncIterator[GenerationEvent]:
    """Completion text chunks -> lmdock's parser -> core events (what the local engine path does)."""
    gate = gate or CallGate()
    result = StreamResult()
    async for chunk in chunks:
        read_usage(chunk, result)
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content")
            if isinstance(text, str) and text:
                result.chunks += 1
                for event in gate(parser.feed(stopper.feed(text))):
                    yield event
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        if stopper.hit is not None or gate.cut:
            break
    if not gate.cut:
        tail = parser.feed(stopper.flush()) if stopper.hit is None else []
        for event in gate(tail + parser.finish()):
            yield event
    usage = result.usage
    if not result.usage_seen:
        usage.output_tokens = result.chunks
    if gate.cut:
        reason, stop_sequence = "tool_use", None
    elif stopper.hit is not None:
        reason, stop_sequence = "stop_sequence", stopper.hit
    elif result.finish_reason == "length":
        reason, stop_sequence = ("context_window" if clamped else "max_tokens"), None
    else:
        reason, stop_sequence = "end_turn", None
    if parser.tool_calls and reason in ("end_turn", "stop_sequence"):
        reason, stop_sequence = "tool_use", None
    yield Done(stop_reason=reason, usage=usage, stop_sequence=stop_sequence)
