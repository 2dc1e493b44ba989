"""Per-family tool-call and reasoning formats, chosen by substrings of the chat template source."""

from __future__ import annotations

from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.formats.deepseek import DeepSeekFormat
from lmdock.chat.formats.generic import GenericFormat
from lmdock.chat.formats.granite import GraniteFormat
from lmdock.chat.formats.harmony import HarmonyFormat
from lmdock.chat.formats.hermes import HermesFormat
from lmdock.chat.formats.llama3 import Llama3Format
from lmdock.chat.formats.mistral import MistralFormat

# Most specific first: Hermes-on-Llama templates contain Llama headers too.
FORMATS: tuple[type[ChatFormat], ...] = (
    DeepSeekFormat,
    HarmonyFormat,
    HermesFormat,
    GraniteFormat,
    MistralFormat,
    Llama3Format,
)


def select_format(source: str, native_tools: bool) -> ChatFormat:
    """The format a template's source asks for; the generic one (with tool instructions in the system
    prompt unless the template renders tools itself) when none matches."""
    for cls in FORMATS:
        if cls.detect(source):
            return cls(source)
    return GenericFormat(source, instruct=not native_tools)


__all__ = ["FORMATS", "ChatFormat", "GenericFormat", "select_format"]
