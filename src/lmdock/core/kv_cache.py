"""KV cache element types and flash attention: what a context stores its keys and values as.

The names and rules are llama.cpp's (llama-server's `-ctk/-ctv/-fa`, as vendored in llama-cpp-python
0.3.36): a quantized V cache only works with flash attention, so `auto` turns it on and `off` is refused
(llama.cpp would fail to create the context); with flash attention a quantized type's block must divide
the model's head size. lmdock checks both before any worker starts, so the user gets a 400 or a CLI error
naming the setting instead of a failed load. LM Studio's `kv_cache_type` (both halves) and
`flash_attention` (a bool) map onto the same three settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from lmdock.core.errors import InvalidRequest

# llama.cpp's `kv_cache_types` (common/arg.cpp), in its order
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FLASH_ATTN = ("on", "off", "auto")


def ggml_type(cache_type: str) -> GGMLQuantizationType:
    """The ggml type of a cache type name (its value is what llama.cpp's `type_k`/`type_v` take)."""
    return GGMLQuantizationType[cache_type.upper()]


def block_size(cache_type: str) -> int:
    """Values per block: 1 for the float types, 32 for the quantized ones."""
    return GGML_QUANT_SIZES[ggml_type(cache_type)][0]


def element_bytes(cache_type: str) -> float:
    """Bytes per cached value (f16: 2, q8_0: 34/32, q4_0: 18/32)."""
    block, size = GGML_QUANT_SIZES[ggml_type(cache_type)]
    return size / block


def is_quantized(cache_type: str) -> bool:
    return block_size(cache_type) > 1


def check_cache_type(value: str, param: str) -> str:
    """A known cache type name, lower-cased; a 400 naming `param` otherwise."""
    name = value.strip().lower()
    if name not in KV_CACHE_TYPES:
        raise InvalidRequest(
            f"{param}: '{value}' is not a KV cache type; use one of {', '.join(KV_CACHE_TYPES)}", param=param
        )
    return name


def flash_attn_value(value: bool | str, param: str = "flash_attn") -> str:
    """`on|off|auto` from llama.cpp's words or LM Studio's bool (true/false, 1/0 from the environment)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    name = {"true": "on", "1": "on", "enabled": "on", "false": "off", "0": "off", "disabled": "off"}.get(
        value.strip().lower(), value.strip().lower()
    )
    if name not in FLASH_ATTN:
        raise InvalidRequest(f"{param}: '{value}' is not one of on, off, auto", param=param)
    return name


@dataclass(frozen=True)
class KvCacheConfig:
    """The KV cache a context is made with. `flash_attn` is the setting (`auto`: llama.cpp decides)."""

    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: str = "auto"

    def checked(self) -> KvCacheConfig:
        """This config with names normalised, or a 400 naming the setting that cannot work."""
        cfg = KvCacheConfig(
            check_cache_type(self.type_k, "cache_type_k"),
            check_cache_type(self.type_v, "cache_type_v"),
            flash_attn_value(self.flash_attn),
        )
        if is_quantized(cfg.type_v) and cfg.flash_attn == "off":
            raise InvalidRequest(
                f"cache_type_v: a quantized V cache ({cfg.type_v}) needs flash attention, which is off; "
                "set flash_attn on or auto, or use an f16, bf16 or f32 V cache",
                param="cache_type_v",
            )
        return cfg

    def check_head_sizes(self, key_length: int, value_length: int) -> None:
        """With flash attention, a quantized type's block must divide the model's head size (llama.cpp
        refuses the context otherwise). Unknown sizes (0) are left to llama.cpp."""
        if self.flash_attn == "off":
            return
        for param, name, size in (
            ("cache_type_k", self.type_k, key_length),
            ("cache_type_v", self.type_v, value_length),
        ):
            block = block_size(name)
            if block > 1 and size and size % block:
                raise InvalidRequest(
                    f"{param}: {name} stores blocks of {block} values, which do not divide this model's "
                    f"head size of {size}; use f16, bf16 or f32",
                    param=param,
                )

    @property
    def label(self) -> str:
        """`q8_0` when K and V agree, else `K/V` (e.g. `q8_0/f16`), as `lmdock ps` shows it."""
        return self.type_k if self.type_k == self.type_v else f"{self.type_k}/{self.type_v}"

    @property
    def lm_studio_type(self) -> str | None:
        """LM Studio's single `kv_cache_type`: the type when K and V agree."""
        return self.type_k if self.type_k == self.type_v else None
