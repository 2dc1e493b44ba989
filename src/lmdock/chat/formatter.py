"""ChatFormatter: a request in, the prompt text, its output grammar and a fresh output parser out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lmdock.chat.formats import select_format
from lmdock.chat.messages import TemplateCaps, fit_to_template, template_messages, template_tools
from lmdock.chat.parser import OutputParser
from lmdock.chat.template import ChatTemplate, TemplateError
from lmdock.core.request import ChatRequest, Message, Tool

# Used when a model ships no template.
CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
_PROBE_TOOL = Tool("lmdock_probe_tool", "probe", {"type": "object", "properties": {}})


@dataclass
class RenderedPrompt:
    """A rendered request. `text` includes BOS if the template emits it (tokenize without adding
    specials); a final assistant message is a prefill that the output continues."""

    text: str
    grammar: str | None
    stop: list[str]
    thinking_open: bool
    parser_factory: Callable[[], OutputParser] = field(repr=False)

    def new_parser(self) -> OutputParser:
        """A fresh parser for this request's output."""
        return self.parser_factory()


class ChatFormatter:
    """Renders requests with one model's chat template and knows that model's output format.

    `special_tokens` maps the text of each token llguidance treats as special to its id (see
    `lmdock.engine.constraint.special_tokens_of`); grammars then reference markers by id. Without it,
    markers shaped like `<...>` are referenced by name, which is right for the default Qwen model.
    """

    def __init__(
        self,
        template_source: str | None,
        bos_token: str = "",
        eos_token: str = "",
        *,
        special_tokens: Mapping[str, int] | None = None,
    ) -> None:
        source = template_source or CHATML
        self._template = ChatTemplate(source)
        self._base = {"bos_token": bos_token, "eos_token": eos_token}
        self._special = special_tokens
        self.caps = self._probe()
        self.format = select_format(source, self.caps.tools)
        self.format_name = self.format.name
        self.supports_tools = self.caps.tools
        self.supports_thinking = self.format.think is not None

    def render(self, req: ChatRequest) -> RenderedPrompt:
        msgs = template_messages(req.messages, self.format.history_call_id)
        msgs = fit_to_template(self.format.prepare(msgs, req.tools), self.caps)
        context = {**self._base, "tools": template_tools(req.tools), **_thinking_kwargs(req)}
        prefill = (
            bool(req.messages) and req.messages[-1].role == "assistant" and not req.messages[-1].tool_calls
        )
        if prefill:
            text, thinking_open = self._continue(msgs, context), False
        else:
            text = self._template.render(messages=msgs, add_generation_prompt=True, **context)
            text, thinking_open = self._thinking_state(text, req)
        tool_names = [t.name for t in req.tools] if req.tool_choice.mode != "none" else []
        return RenderedPrompt(
            text=text,
            # A grammar constrains the output from its first token, which a prefill has already passed.
            grammar=None if prefill else self.format.grammar(req, self._special, thinking_open),
            stop=list(self.format.stop),
            thinking_open=thinking_open,
            parser_factory=partial(self.format.new_parser, tool_names, thinking_open),
        )

    def _continue(self, msgs: list[dict[str, Any]], context: dict[str, Any]) -> str:
        """Render up to the end of the final assistant message's text, leaving it open."""
        needle = msgs[-1]["content"].strip()
        full = self._template.render(messages=msgs, add_generation_prompt=False, **context)
        at = full.rfind(needle) if needle else -1
        if at >= 0:
            return full[: at + len(needle)]
        head = self._template.render(messages=msgs[:-1], add_generation_prompt=True, **context)
        return head + msgs[-1]["content"]

    def _thinking_state(self, text: str, req: ChatRequest) -> tuple[str, bool]:
        """Whether the prompt leaves a reasoning block open; close it when thinking is switched off."""
        think = self.format.think
        if think is None or not text.rstrip().endswith(think[0]):
            return text, False
        if req.thinking.enabled is False:
            return text.rstrip() + "\n\n" + think[1] + "\n\n", False
        return text, True

    def _probe(self) -> TemplateCaps:
        """Find out what the template renders by rendering tiny conversations once."""
        user, reply = Message("user", "lmdock-probe-user"), Message("assistant", "lmdock-probe-reply")
        system = Message("system", "lmdock-probe-system")
        tools_out = self._try([user], tools=template_tools([_PROBE_TOOL]))
        return TemplateCaps(
            system=system.content in self._try([system, user]),
            mid_system=system.content in self._try([user, reply, system, Message("user", "next")]),
            consecutive_users="lmdock-probe-second"
            in self._try([user, Message("user", "lmdock-probe-second")]),
            tools=_PROBE_TOOL.name in tools_out,
        )

    def _try(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        msgs = template_messages(messages)
        try:
            return self._template.render(messages=msgs, add_generation_prompt=True, tools=tools, **self._base)
        except TemplateError:
            return ""


def _thinking_kwargs(req: ChatRequest) -> dict[str, Any]:
    """Template switches for reasoning; left undefined when the request does not say, so the
    template's own default applies."""
    out: dict[str, Any] = {}
    if req.thinking.enabled is not None:
        out["enable_thinking"] = out["thinking"] = req.thinking.enabled
    if req.thinking.effort:
        out["reasoning_effort"] = req.thinking.effort
    return out
