"""What a request that sets no sampling fields gets: per field, the first of

1. the user's preset for the model, `$LMDOCK_HOME/presets/<model key>.json` (e.g.
   `{"temperature": 0.7, "top_k": 20}`): something a person wrote on purpose, so it wins;
2. the model file's own recommendation, GGUF `general.sampling.*` keys (as llama.cpp's common reads them);
3. lmdock's built-in defaults (`core.request.BUILTIN_SAMPLING`, chosen for agentic tool use).

Explicit request values always win over all three (`SamplingParams.resolved`). The preset is re-read when
its file changes, so editing it needs no reload.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdock.core.config import lmdock_home
from lmdock.core.request import BUILTIN_SAMPLING, SamplingParams
from lmdock.models.store import ModelRecord

log = logging.getLogger(__name__)

# GGUF general.sampling.<name> -> SamplingParams field (llama.cpp's names; mirostat/XTC are not supported)
_GGUF_KEYS = {
    "temp": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "penalty_repeat": "repeat_penalty",
    "penalty_last_n": "penalty_last_n",
}
_PRESET_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "penalty_last_n")
_INT_FIELDS = ("top_k", "penalty_last_n")
_preset_cache: dict[Path, tuple[int, dict[str, float]]] = {}


@dataclass
class SamplingDefaults:
    """A model's effective defaults and where each came from (`preset`, `gguf` or `lmdock`)."""

    params: SamplingParams
    sources: dict[str, str] = field(default_factory=dict)
    preset_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self.params, name) for name in _PRESET_FIELDS}
        out["source"] = dict(self.sources)
        out["preset_path"] = str(self.preset_path) if self.preset_path else None
        return out

    def summary(self) -> str:
        p = self.params
        text = f"temperature {p.temperature:g}, top_k {p.top_k}, top_p {p.top_p:g}, min_p {p.min_p:g}"
        if p.repeat_penalty != 1.0:
            text += f", repeat_penalty {p.repeat_penalty:g}"
        origins = sorted(set(self.sources.values()) - {"lmdock"})
        return text + (f" (from {' + '.join(origins)})" if origins else " (lmdock defaults)")


def preset_path(key: str, home: Path | None = None) -> Path:
    return (home or lmdock_home()) / "presets" / f"{key}.json"


def _valid(name: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = int(value) if name in _INT_FIELDS else float(value)
    ok = {
        "temperature": 0 <= value <= 2,
        "top_k": value >= 0,
        "top_p": 0 <= value <= 1,
        "min_p": 0 <= value <= 1,
        "repeat_penalty": 0 < value <= 10,
        "penalty_last_n": value >= -1,
    }[name]
    return value if ok else None


def read_preset(path: Path) -> dict[str, float]:
    """The valid fields of a preset file (cached by mtime); a missing file is empty, a broken one is
    logged and ignored rather than failing requests."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {}
    cached = _preset_cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    values: dict[str, float] = {}
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        for name, value in raw.items():
            if name not in _PRESET_FIELDS:
                log.warning("%s: unknown sampling field %r ignored", path, name)
                continue
            checked = _valid(name, value)
            if checked is None:
                log.warning("%s: invalid %s %r ignored", path, name, value)
                continue
            values[name] = checked
    except (OSError, ValueError) as exc:
        log.warning("%s: sampling preset ignored: %s", path, exc)
    _preset_cache[path] = (mtime, values)
    return values


def sampling_defaults(record: ModelRecord, home: Path | None = None) -> SamplingDefaults:
    path = preset_path(record.key, home)
    layers = [("preset", read_preset(path))]
    gguf: dict[str, float] = {}
    for key, value in record.metadata.sampling.items():
        name = _GGUF_KEYS.get(key)
        checked = _valid(name, value) if name else None
        if name and checked is not None:
            gguf[name] = checked
    layers.append(("gguf", gguf))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in _PRESET_FIELDS:
        for source, layer in layers:
            if name in layer:
                values[name], sources[name] = layer[name], source
                break
        else:
            values[name], sources[name] = getattr(BUILTIN_SAMPLING, name), "lmdock"
    return SamplingDefaults(params=SamplingParams(**values).resolved(), sources=sources, preset_path=path)
