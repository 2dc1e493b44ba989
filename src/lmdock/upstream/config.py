"""Upstream models: what the config file (`LMDOCK_HOME/upstreams.toml`) and `--upstream` flags declare.

```toml
[[upstream]]
name = "qwen-coder"                       # the model name clients ask for
urls = ["http://gpu1:8000", "http://gpu2:8000"]  # `http://user:password@host` for HTTP basic auth
kind = "openai"                           # or "lmdock"; left out: detected by probing the first URL
model = "Qwen/Qwen2.5-Coder-32B-Instruct" # the name the upstream serves (left out: its first model)
api_key_env = "VLLM_API_KEY"              # the key is read from this variable, never logged
context_length = 32768                    # left out: probed (llama-server /props, vLLM max_model_len)
prompt = "chat"                           # or "raw": lmdock renders the template, /v1/completions
grammar = "none"                          # raw only: "lark" sends lmdock's llguidance grammars
tokenizer = "/path/to/model.gguf"         # count_tokens (and raw templates) from a local GGUF vocab
max_outstanding = 0                       # per node; more in flight is a 529 (0: no limit)
timeout = 600                             # seconds to the first byte and between streamed chunks
```
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from lmdock.core.config import Settings, lmdock_home

Kind = Literal["openai", "lmdock", "auto"]
Credentials = tuple[str, str]  # HTTP basic: user, password
PromptMode = Literal["chat", "raw"]

CONFIG_NAME = "upstreams.toml"


class UpstreamConfigError(ValueError):
    """A config file or flag that cannot be used (reported at start-up, never silently ignored)."""


@dataclass
class UpstreamSpec:
    name: str
    urls: list[str]  # without credentials: those are in `credentials`, by URL
    kind: Kind = "auto"
    model: str | None = None
    api_key_env: str | None = None
    context_length: int | None = None
    prompt: PromptMode = "chat"
    grammar: Literal["none", "lark"] = "none"
    tokenizer: Path | None = None
    max_outstanding: int = 0
    timeout: float = 600.0
    connect_timeout: float = 5.0
    health_interval: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)
    # HTTP basic credentials given in a URL as `user:password@host`, kept out of the spec's repr
    credentials: dict[str, Credentials] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return self.name.strip().lower()

    def api_key(self) -> str | None:
        """The key from its environment variable, read at use so it never sits in the spec's repr."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


_FIELDS = {
    "name",
    "urls",
    "url",
    "kind",
    "model",
    "api_key_env",
    "context_length",
    "prompt",
    "grammar",
    "tokenizer",
    "max_outstanding",
    "timeout",
    "connect_timeout",
    "health_interval",
}


_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#]*@")


def public_url(url: str) -> str:
    """`url` without its `user:password@` part: the only form lmdock shows (listings, /health,
    /metrics, logs, errors). Never raises, so it can redact a URL that does not parse."""
    return _USERINFO.sub(lambda m: m[1] or "", url.strip(), count=1)


def _clean_url(url: str) -> tuple[str, Credentials | None]:
    """A base URL as nodes use it (credential-free), and the credentials it carried, if any."""
    shown = public_url(url).rstrip("/")
    try:
        parts = urlsplit(url.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        named = "an upstream URL with credentials" if "@" in url else f"upstream URL '{shown}'"
        raise UpstreamConfigError(f"{named} must start with http:// or https:// and name a host")
    if parts.query or parts.fragment:
        raise UpstreamConfigError(f"upstream URL '{shown}' is a base URL: it takes no query or fragment")
    shown = shown.removesuffix("/v1")
    if "@" not in parts.netloc:
        return shown, None
    return shown, (unquote(parts.username or ""), unquote(parts.password or ""))


def spec_from_dict(data: dict[str, Any], where: str = "config") -> UpstreamSpec:
    unknown = set(data) - _FIELDS
    if unknown:
        raise UpstreamConfigError(f"{where}: unknown upstream field(s) {', '.join(sorted(unknown))}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UpstreamConfigError(f"{where}: an upstream needs a `name`")
    urls = data.get("urls", data.get("url"))
    if isinstance(urls, str):
        urls = [urls]
    if not urls or not all(isinstance(u, str) for u in urls):
        raise UpstreamConfigError(f"{where}: upstream '{name}' needs `urls` (a list of base URLs)")
    kind = data.get("kind", "auto")
    if kind not in ("openai", "lmdock", "auto"):
        raise UpstreamConfigError(f"{where}: upstream '{name}': kind must be openai, lmdock or auto")
    prompt = data.get("prompt", "chat")
    if prompt not in ("chat", "raw"):
        raise UpstreamConfigError(f"{where}: upstream '{name}': prompt must be chat or raw")
    grammar = data.get("grammar", "none")
    if grammar not in ("none", "lark"):
        raise UpstreamConfigError(f"{where}: upstream '{name}': grammar must be none or lark")
    tokenizer = data.get("tokenizer")
    cleaned = [_clean_url(u) for u in urls]
    try:
        return UpstreamSpec(
            name=name.strip(),
            urls=[url for url, _ in cleaned],
            credentials={url: auth for url, auth in cleaned if auth is not None},
            kind=kind,
            model=data.get("model"),
            api_key_env=data.get("api_key_env"),
            context_length=int(data["context_length"]) if data.get("context_length") else None,
            prompt=prompt,
            grammar=grammar,
            tokenizer=Path(tokenizer).expanduser() if tokenizer else None,
            max_outstanding=int(data.get("max_outstanding", 0)),
            timeout=float(data.get("timeout", 600.0)),
            connect_timeout=float(data.get("connect_timeout", 5.0)),
            health_interval=float(data.get("health_interval", 5.0)),
        )
    except (TypeError, ValueError) as exc:
        raise UpstreamConfigError(f"{where}: upstream '{name}': {exc}") from None


def parse_flag(value: str) -> UpstreamSpec:
    """`NAME=URL[,URL...]` from `lmdock serve --upstream`."""
    name, sep, urls = value.partition("=")
    if not sep or not name.strip() or not urls.strip():
        raise UpstreamConfigError(f"--upstream '{value}': expected NAME=URL[,URL...]")
    return spec_from_dict({"name": name, "urls": [u for u in urls.split(",") if u.strip()]}, "--upstream")


def load_file(path: Path) -> list[UpstreamSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UpstreamConfigError(f"{path}: {exc}") from None
    entries = data.get("upstream", [])
    if not isinstance(entries, list):
        raise UpstreamConfigError(f"{path}: `upstream` must be an array of tables ([[upstream]])")
    return [spec_from_dict(e, str(path)) for e in entries]


def specs_of(settings: Settings) -> list[UpstreamSpec]:
    """The upstream models `--upstream` and the config file declare (`--upstream-config`, else
    LMDOCK_HOME/upstreams.toml if it exists)."""
    path = settings.upstream_config
    if path is not None and not path.is_file():
        raise UpstreamConfigError(f"--upstream-config {path}: no such file")
    return load_specs(path or lmdock_home() / CONFIG_NAME, settings.upstreams)


def load_specs(config_path: Path | None, flags: list[str]) -> list[UpstreamSpec]:
    """The file's upstreams, then the flags' (a flag replaces a file entry of the same name)."""
    specs: dict[str, UpstreamSpec] = {}
    if config_path is not None and config_path.is_file():
        for spec in load_file(config_path):
            specs[spec.key] = spec
    for flag in flags:
        spec = parse_flag(flag)
        base = specs.get(spec.key)
        if base is not None:  # keep the file's settings, use the flag's URLs
            base.urls, base.credentials = spec.urls, spec.credentials
        else:
            specs[spec.key] = spec
    return list(specs.values())
