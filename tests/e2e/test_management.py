"""Model management on a server of its own: a store with two copies of the default model and a broken
file, `--max-loaded 1`, and HF_ENDPOINT pointing at a local stand-in for the Hub.

Tests run in file order and share the server's state; each says which model it expects loaded."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import DEFAULT_MODEL, Server, start_server
from tests.hf_fixture import FakeHub, write_gguf

QWEN = "qwen2.5-coder-0.5b-instruct"
SECOND = "second-model"
HI = [{"role": "user", "content": "Hi"}]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same bytes, no 490 MB copy
    except OSError:
        shutil.copyfile(src, dst)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    hub = FakeHub()
    hub.add("acme/Tiny-GGUF", "tiny-Q4_K_M.gguf", write_gguf(tmp / "a.gguf", pad_floats=100_000).read_bytes())
    hub.add("acme/Tiny-GGUF", "mmproj-tiny-f16.gguf", write_gguf(tmp / "b.gguf").read_bytes())
    hub.add("acme/Bad-GGUF", "bad-Q4_K_M.gguf", (tmp / "a.gguf").read_bytes(), corrupt=True)
    yield hub.start()
    hub.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("store") / "models"
    _link(DEFAULT_MODEL, models / "Qwen" / "Qwen2.5-Coder-0.5B-Instruct-GGUF" / DEFAULT_MODEL.name)
    _link(DEFAULT_MODEL, models / "lmdock-test" / "Second-GGUF" / "second-model-q4_k_m.gguf")
    broken = models / "lmdock-test" / "Broken-GGUF" / "broken-q4_k_m.gguf"
    broken.parent.mkdir(parents=True)
    with DEFAULT_MODEL.open("rb") as f:
        broken.write_bytes(f.read(8 << 20))  # a download cut short
    return models


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory, store: Path, hub: FakeHub) -> Server:
    srv = start_server(
        tmp_path_factory.mktemp("mgmt"),
        "--max-loaded",
        "1",
        "--ctx-size",
        "2048",
        env={"LMDOCK_MODELS_DIR": str(store), "HF_ENDPOINT": hub.url},
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(mgmt: Server) -> openai.OpenAI:
    return mgmt.openai(strict=False)


def _models(server: Server) -> dict[str, dict]:
    return {m["key"]: m for m in httpx.get(f"{server.base_url}/api/v1/models", timeout=30).json()["models"]}


def _state(server: Server) -> dict[str, str]:
    return {key: m["state"] for key, m in _models(server).items()}


def test_list_shows_every_model_with_metadata_and_state(mgmt: Server):
    models = _models(mgmt)
    assert set(models) == {QWEN, SECOND, "broken"}
    qwen = models[QWEN]
    assert qwen["state"] == "loaded" and qwen["loaded_instances"][0]["config"]["context_length"] == 2048
    assert (qwen["architecture"], qwen["quantization"]["name"], qwen["params_string"]) == (
        "qwen2",
        "Q4_K_M",
        "0.5B",
    )
    assert qwen["capabilities"]["trained_for_tool_use"] and not qwen["capabilities"]["vision"]
    second = models[SECOND]
    assert second["state"] == "not-loaded" and second["loaded_instances"] == []
    estimate = second["memory_estimate"]
    assert (
        estimate["kv_bytes_per_token"] == 24 * 2 * (64 + 64) * 2
    )  # qwen2 0.5B: layers x kv heads x dims x f16
    assert estimate["kv_cache_bytes"] == 2048 * estimate["kv_bytes_per_token"]
    assert estimate["total_bytes"] == (
        second["size_bytes"]
        + estimate["kv_cache_bytes"]
        + estimate["compute_bytes"]
        + estimate["process_bytes"]
    )
    assert second["memory_estimates"]["q8_0"]["kv_bytes_per_token"] == 24 * 2 * (64 + 64) * 34 // 32
    assert "truncated" in models["broken"]["error"]


def test_jit_load_evicts_the_least_recently_used_model(mgmt: Server, oai: openai.OpenAI):
    r = oai.chat.completions.create(model=SECOND, messages=HI, max_tokens=3, temperature=0)
    assert r.choices[0].message.content is not None
    assert _state(mgmt) == {QWEN: "not-loaded", SECOND: "loaded", "broken": "not-loaded"}
    assert _models(mgmt)[SECOND]["loaded_instances"][0]["config"]["ttl_seconds"] == 3600  # the JIT default


def test_request_ttl_unloads_an_idle_jit_model(mgmt: Server, oai: openai.OpenAI):
    oai.chat.completions.create(model=QWEN, messages=HI, max_tokens=3, extra_body={"ttl": 6})
    assert _models(mgmt)[QWEN]["loaded_instances"][0]["config"]["ttl_seconds"] == 6
    time.sleep(7)
    assert _state(mgmt)[QWEN] == "not-loaded"  # listing applies expired TTLs before it reports


def test_load_reload_and_unload_from_the_cli(mgmt: Server):
    done = mgmt.cli("load", SECOND, "--context-length", "1024", "--parallel", "2")
    assert done.returncode == 0, done.stderr
    assert "Loaded second-model (context 1024, parallel 2, KV f16, flash attention on)" in done.stdout
    ps = mgmt.cli("ps")
    assert SECOND in ps.stdout and "1024" in ps.stdout
    r = httpx.post(
        f"{mgmt.base_url}/api/v1/models/load",
        json={"model": SECOND, "config": {"context_length": 2048}},
        timeout=120,
    )
    assert r.status_code == 200 and r.json()["config"]["context_length"] == 2048  # reloaded to match
    assert r.json()["config"]["ttl_seconds"] is None  # an explicit load never expires
    assert mgmt.cli("unload", SECOND).returncode == 0
    again = mgmt.cli("unload", SECOND)
    assert again.returncode == 1 and "not loaded" in again.stderr and "Traceback" not in again.stderr
    estimate = mgmt.cli("load", QWEN, "--estimate-only", "-c", "4096")
    assert estimate.returncode == 0 and "KV cache 50.3 MB" in estimate.stdout
    assert _state(mgmt)[QWEN] == "not-loaded"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini"])
def test_path_like_names_are_refused(mgmt: Server, name: str):
    for route in ("load", "download"):
        r = httpx.post(f"{mgmt.base_url}/api/v1/models/{route}", json={"model": name})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_a_broken_model_fails_cleanly_and_the_server_keeps_serving(mgmt: Server, oai: openai.OpenAI):
    r = httpx.post(f"{mgmt.base_url}/api/v1/models/load", json={"model": "broken"}, timeout=120)
    assert r.status_code == 400 and "truncated" in r.json()["error"]["message"]
    cli = mgmt.cli("load", "broken")
    assert cli.returncode == 1 and "truncated" in cli.stderr and "Traceback" not in cli.stderr
    with pytest.raises(openai.BadRequestError, match="broken"):
        oai.chat.completions.create(model="broken", messages=HI, max_tokens=3)
    with pytest.raises(openai.NotFoundError, match=SECOND):
        oai.chat.completions.create(model="no-such-model", messages=HI, max_tokens=3)
    assert httpx.get(f"{mgmt.base_url}/health").json()["status"] == "ok"
    assert oai.chat.completions.create(model=QWEN, messages=HI, max_tokens=3).choices


def test_download_job_puts_a_model_in_the_store(mgmt: Server, store: Path):
    job = httpx.post(f"{mgmt.base_url}/api/v1/models/download", json={"model": "acme/Tiny-GGUF"}).json()
    assert job["job_id"].startswith("job_") and job["model"] == "tiny"
    deadline = time.monotonic() + 60
    while job["status"] == "downloading" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = httpx.get(f"{mgmt.base_url}/api/v1/models/download/{job['job_id']}").json()
    assert job["status"] == "completed", job
    assert job["downloaded_bytes"] == job["total_size_bytes"] > 400_000
    assert (store / "acme" / "Tiny-GGUF" / "tiny-Q4_K_M.gguf").is_file()
    tiny = _models(mgmt)["tiny"]
    assert tiny["state"] == "not-loaded" and tiny["capabilities"]["vision"]  # the projector came along
    again = httpx.post(f"{mgmt.base_url}/api/v1/models/download", json={"model": "acme/Tiny-GGUF"}).json()
    assert again["status"] == "already_downloaded"
    # a tokenizer-only GGUF downloads fine but is not a model llama.cpp can run
    r = httpx.post(f"{mgmt.base_url}/api/v1/models/load", json={"model": "tiny"}, timeout=120)
    assert r.status_code == 400 and "tiny" in r.json()["error"]["message"]
    assert httpx.get(f"{mgmt.base_url}/health").json()["status"] == "ok"


def test_download_errors(mgmt: Server, store: Path):
    r = httpx.post(f"{mgmt.base_url}/api/v1/models/download", json={"model": "acme/Missing-GGUF"})
    assert r.status_code == 404 and "not found" in r.json()["error"]["message"]
    job = httpx.post(f"{mgmt.base_url}/api/v1/models/download", json={"model": "acme/Bad-GGUF"}).json()
    deadline = time.monotonic() + 60
    while job["status"] == "downloading" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = httpx.get(f"{mgmt.base_url}/api/v1/models/download/status/{job['job_id']}").json()
    assert job["status"] == "failed" and "corrupt" in job["error"]
    assert not list((store / "acme" / "Bad-GGUF").glob("*"))
    assert httpx.get(f"{mgmt.base_url}/api/v1/models/download/job_nope").status_code == 404
