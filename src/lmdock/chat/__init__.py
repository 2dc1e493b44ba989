"""Chat layer: render prompts with the model's template, constrain and parse its output per family."""

from lmdock.chat.formatter import ChatFormatter, RenderedPrompt
from lmdock.chat.messages import normalize_billing_header
from lmdock.chat.parser import OutputParser
from lmdock.chat.template import TemplateError

__all__ = [
    "ChatFormatter",
    "OutputParser",
    "RenderedPrompt",
    "TemplateError",
    "normalize_billing_header",
]
