"""What a stored model can do, judged from its files: tool use, reasoning, vision, embeddings.

These are the hints a model list shows (LM Studio's `trained_for_tool_use`, `vision`...). Generation
itself does not depend on them: the chat layer probes the template for what it really renders.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lmdock.models.store import ModelRecord

_TOOLS = re.compile(r"\btools\b")
_REASONING = ("<think>", "reasoning_content", "enable_thinking", "<|channel|>")
_EMBEDDING_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "t5encoder"}


@dataclass
class Capabilities:
    trained_for_tool_use: bool
    reasoning: bool
    vision: bool

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


def model_type(record: ModelRecord) -> str:
    """`embedding` for encoder models that pool (bert and friends), else `llm`."""
    meta = record.metadata
    return "embedding" if meta.architecture in _EMBEDDING_ARCHS or meta.pooling else "llm"


def capabilities(record: ModelRecord) -> Capabilities:
    template = record.metadata.chat_template or ""
    return Capabilities(
        trained_for_tool_use=bool(_TOOLS.search(template)),
        reasoning=any(marker in template for marker in _REASONING),
        vision=any(record.path.parent.glob("mmproj*.gguf")),
    )
