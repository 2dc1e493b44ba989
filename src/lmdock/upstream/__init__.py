"""Models served by upstream engines (vLLM, SGLang, llama-server, other lmdock nodes) behind lmdock's APIs."""

from lmdock.upstream.config import UpstreamConfigError, UpstreamSpec, load_specs, specs_of
from lmdock.upstream.model import UpstreamModel, UpstreamRegistry

__all__ = [
    "UpstreamConfigError",
    "UpstreamModel",
    "UpstreamRegistry",
    "UpstreamSpec",
    "load_specs",
    "specs_of",
]
