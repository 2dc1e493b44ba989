"""Real upstream nodes for the upstream tests: llama-server processes built from the llama.cpp vendored in
llama-cpp-python (bench/_common.py builds it once into ~/.cache/lmdock-bench; several minutes on 2 cores
the first time), and `lmdock serve` in front of them.

The `server` and `client` fixtures here replace the ones the project's own e2e tests use, so those tests,
imported into this package, run against lmdock with an upstream model instead of a local one.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.conftest import DEFAULT_MODEL, REPO, Server, start_server
from tests.upstream.fake_upstream import FakeUpstream

sys.path.insert(0, str(REPO / "bench"))
import _common  # noqa: E402

NAME = "qwen2.5-coder-0.5b-instruct"  # the name the shared e2e tests ask for
RAW = "qwen-raw"


def llama_server_binary() -> Path:
    """The cached llama-server, built on first use (one build at a time across processes)."""
    _common.CACHE.mkdir(parents=True, exist_ok=True)
    with open(_common.CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _common.build_llama_server()


def start_node(tmp: Path, index: int) -> _common.Server:
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"default model missing at {DEFAULT_MODEL}: run `make model`")
    llama_server_binary()
    spec = _common.ServerSpec("llama-server", ctx=8192, threads=2, parallel=2, extra=("--jinja",))
    return _common.Server(spec, tmp / f"llama-server-{index}.log").start(timeout=300)


def start_front(tmp: Path, nodes: list[_common.Server]) -> Server:
    """lmdock with NAME (chat mode) and RAW (raw prompts) served by `nodes`."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    urls = ", ".join(f'"{n.base_url}"' for n in nodes)
    (home / "upstreams.toml").write_text(
        f'[[upstream]]\nname = "{NAME}"\nurls = [{urls}]\nhealth_interval = 1\n\n'
        f'[[upstream]]\nname = "{RAW}"\nurls = [{urls}]\nprompt = "raw"\nhealth_interval = 1\n'
    )
    return start_server(
        tmp, "--model", NAME, ready=lambda h: h["upstreams"].get(NAME, {}).get("healthy_nodes") == len(nodes)
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    """The misbehaving OpenAI-style upstream (tests/upstream/fake_upstream.py), one per test module."""
    f = FakeUpstream().start()
    yield f
    f.close()


@pytest.fixture(scope="session")
def llama_nodes(tmp_path_factory) -> list[_common.Server]:
    tmp = tmp_path_factory.mktemp("nodes")
    nodes = []
    try:
        for i in range(2):
            nodes.append(start_node(tmp, i))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory, llama_nodes) -> Server:
    srv = start_front(tmp_path_factory.mktemp("front"), llama_nodes)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> anthropic.Anthropic:
    return server.anthropic(timeout=900)  # two llama-server nodes behind one front: slow on 2 cores
