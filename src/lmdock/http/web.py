"""The web app at `/`: the front-end built from `web/` (`make web`) into `webapp/` beside this module.

Two routes only: `/` (index.html, never cached) and `/_app/<file>` (content-hashed bundles, cached for
good). Neither needs the API key: the page holds no data, it asks for the key and then calls the same
public APIs as any client. When the bundle was not built, `/` says how to build it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

WEBAPP_DIR = Path(__file__).resolve().parent / "webapp"
ASSETS_PREFIX = "/_app/"
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # short enough for any file system

# The page loads only its own bundles and talks only to this server; model output is rendered as
# sanitised HTML, and this policy is the second fence around it (no inline script, no remote content).
_PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmdock: web app not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>lmdock is running; its web app is not built</h1>
<p>The APIs work (<code>/v1/messages</code>, <code>/v1/chat/completions</code>, <code>/api/v1/models</code>).
To build the web app, install Node.js 20+ and npm, then in the lmdock checkout run</p>
<pre>make web</pre>
<p>(or <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>) and reload this page.
<code>make serve</code> builds it for you when npm is available.</p>
</body></html>
"""

router = APIRouter(include_in_schema=False)


def is_public_path(path: str) -> bool:
    """The page and its bundles are served without an API key (they contain no data)."""
    return path == "/" or path.startswith(ASSETS_PREFIX)


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> Response:
    page = WEBAPP_DIR / "index.html"
    if not page.is_file():
        return HTMLResponse(_NOT_BUILT, status_code=503, headers={"cache-control": "no-cache"})
    return FileResponse(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


@router.api_route(ASSETS_PREFIX + "{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> Response:
    path = WEBAPP_DIR / "_app" / name
    if not _ASSET_NAME.match(name) or not path.is_file():
        raise HTTPException(status_code=404)
    return FileResponse(
        path,
        headers={"cache-control": "public, max-age=31536000, immutable", "x-content-type-options": "nosniff"},
    )
