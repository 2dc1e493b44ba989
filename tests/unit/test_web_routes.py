"""The web app's routes: `/` and `/_app/*` serve files only from the built folder, need no API key, and
say how to build the app when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lmdock.http import web
from lmdock.http.middleware import RequestContext


@pytest.fixture
def built(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "_app").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>lmdock</title>")
    (tmp_path / "_app" / "main-ABC.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not an asset")
    monkeypatch.setattr(web, "WEBAPP_DIR", tmp_path)
    return tmp_path


def _client(api_keys: list[str] | None = None) -> TestClient:
    app = FastAPI()
    app.add_middleware(RequestContext, api_keys=api_keys or [], max_body_bytes=1 << 20)
    app.include_router(web.router)

    @app.get("/api/v1/models")
    async def models():
        return {"models": []}

    return TestClient(app, base_url="http://127.0.0.1")  # a loopback Host, as the Host check wants


def test_index_and_assets(built: Path):
    client = _client()
    page = client.get("/")
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.head("/").status_code == 200
    js = client.get("/_app/main-ABC.js")
    assert js.status_code == 200 and "immutable" in js.headers["cache-control"]
    assert "javascript" in js.headers["content-type"]


@pytest.mark.parametrize(
    "path",
    [
        "/_app/../secret.txt",
        "/_app/%2e%2e%2fsecret.txt",
        "/_app/.hidden",
        "/_app/nope.js",
        "/_app/" + "a" * 256,  # longer than a file name may be (was a 500: ENAMETOOLONG)
        "/_app/" + "b" * 5000 + ".js",
    ],
    ids=lambda path: path[:40],
)
def test_only_built_assets_are_served(built: Path, path: str):
    assert _client().get(path).status_code == 404


def test_page_needs_no_key_but_the_api_does(built: Path):
    client = _client(["k1"])
    assert client.get("/").status_code == 200
    assert client.get("/_app/main-ABC.js").status_code == 200
    assert client.get("/api/v1/models").status_code == 401
    assert client.get("/api/v1/models", headers={"x-api-key": "k1"}).status_code == 200


def test_missing_build_says_how_to_build(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(web, "WEBAPP_DIR", tmp_path / "absent")
    page = _client().get("/")
    assert page.status_code == 503
    assert "make web" in page.text
