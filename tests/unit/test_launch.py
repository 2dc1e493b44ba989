"""The settings `lmdock launch <agent>` starts each agent with (pure logic; the agents themselves run in
tests/e2e/test_agents.py and test_cli.py)."""

from __future__ import annotations

import json
import tomllib

import pytest

from lmdock.cli.client import Server
from lmdock.cli.launch_cmd import AGENTS, Target, codex_settings, opencode_settings

MODEL = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture
def target(monkeypatch) -> Target:
    monkeypatch.delenv("LMDOCK_API_KEY", raising=False)
    return Target(Server("0.0.0.0", 4321), MODEL, 32768)


def _codex_config(args: list[str]) -> dict:
    """Codex reads each `-c key=value` as TOML: the same text as a config file."""
    assert args[::2] == ["-c"] * (len(args) // 2)
    return tomllib.loads("\n".join(args[1::2]))


def test_codex_gets_lmdock_as_a_responses_provider_on_its_command_line(target: Target):
    launch = codex_settings(target)
    config = _codex_config(launch.args)
    assert config["model_provider"] == "lmdock" and config["model"] == MODEL
    assert config["model_providers"]["lmdock"] == {
        "name": "lmdock",
        "base_url": "http://127.0.0.1:4321/v1",
        "wire_api": "responses",
        "stream_idle_timeout_ms": 1_800_000,
    }
    assert config["model_context_window"] == 32768 and config["web_search"] == "disabled"
    assert launch.env == {}  # no key: Codex sends none, lmdock wants none


def test_codex_reads_the_servers_api_key_from_the_environment(target: Target, monkeypatch):
    monkeypatch.setenv("LMDOCK_API_KEY", "k1,k2")
    launch = codex_settings(target)
    assert _codex_config(launch.args)["model_providers"]["lmdock"]["env_key"] == "CODEX_LMDOCK_API_KEY"
    assert launch.env == {"CODEX_LMDOCK_API_KEY": "k1"}
    assert not any("k1" in a for a in launch.args)  # never on a command line (ps shows those)


def test_opencode_gets_lmdock_as_an_anthropic_provider_in_its_environment(target: Target):
    launch = opencode_settings(target)
    assert launch.args == []
    config = json.loads(launch.env["OPENCODE_CONFIG_CONTENT"])
    provider = config["provider"]["lmdock"]
    assert provider["npm"] == "@ai-sdk/anthropic"
    assert provider["options"]["baseURL"] == "http://127.0.0.1:4321/v1"
    assert provider["options"]["apiKey"] == "lmdock" and provider["options"]["timeout"] is False
    assert provider["models"][MODEL]["limit"] == {"context": 32768, "output": 8192}
    assert config["model"] == config["small_model"] == f"lmdock/{MODEL}"


def test_every_agent_is_a_table_entry_with_an_install_hint(target: Target):
    assert set(AGENTS) >= {"claude", "codex", "opencode"}
    for agent in AGENTS.values():
        launch = agent.settings(target)
        assert launch.env or launch.args
        assert agent.install.startswith("npm install -g ")
