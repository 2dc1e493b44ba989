"""Protocol-neutral request, event and error types shared by every layer."""

from lmdock.core.errors import (
    DownloadFailed,
    InvalidRequest,
    LmdockError,
    ModelLoadError,
    ModelNotFound,
    Overloaded,
    PromptTooLong,
)
from lmdock.core.events import (
    Done,
    GenerationEvent,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCallArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from lmdock.core.request import (
    ChatRequest,
    Message,
    SamplingParams,
    ThinkingConfig,
    Tool,
    ToolCall,
    ToolChoice,
)

__all__ = [
    "ChatRequest",
    "Done",
    "DownloadFailed",
    "GenerationEvent",
    "InvalidRequest",
    "LmdockError",
    "Message",
    "ModelLoadError",
    "ModelNotFound",
    "Overloaded",
    "PromptTooLong",
    "SamplingParams",
    "StopReason",
    "TextDelta",
    "ThinkingConfig",
    "ThinkingDelta",
    "Tool",
    "ToolCall",
    "ToolCallArgsDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolChoice",
    "Usage",
]
