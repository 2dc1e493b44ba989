"""One source of defaults: `lmdock serve` without flags and `create_app(Settings())` agree."""

from __future__ import annotations

import dataclasses
import inspect

from lmdock.cli.serve import serve
from lmdock.core.config import Settings

# flags whose Settings field is named differently (list fields collect a repeatable flag)
_RENAMED = {
    "api_key": "api_keys",
    "cache_ram": "cache_ram_mib",
    "ttl": "ttl_seconds",
    "cors_origin": "cors_origins",
}


def test_every_serve_flag_defaults_to_the_settings_default():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    checked = 0
    for name, param in inspect.signature(serve).parameters.items():
        field = fields.get(_RENAMED.get(name, name))
        if field is None or field.default is dataclasses.MISSING:
            continue  # not a setting (log level), or a list/path whose flag default is "unset"
        assert param.default == field.default, name
        checked += 1
    assert checked >= 10


def test_settings_defaults_are_what_serve_uses():
    settings = Settings()
    assert settings.ctx_size == 0  # the model's own context, capped (was 8192 here, 0 in serve)
    assert settings.threads >= 1  # 0 means every core
