"""lmdock: a local LLM server with a faithful Anthropic Messages API on llama.cpp."""

__version__ = "0.1.0"
