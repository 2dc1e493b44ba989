"""The composition root: `create_app` builds the FastAPI application from every layer (middleware, error
handlers, every protocol's router, the model manager). Nothing below it imports it; `lmdock serve` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from lmdock import __version__
from lmdock.api.anthropic import router as anthropic_router
from lmdock.api.anthropic.batches import router as batches_router
from lmdock.api.anthropic.batches import start_batch_runner
from lmdock.api.native import router as native_router
from lmdock.api.openai import router as openai_router
from lmdock.api.request_log import RequestLogHub, RequestLogMiddleware
from lmdock.api.responses import router as responses_router
from lmdock.chat.session import ChatSession
from lmdock.core.config import Settings
from lmdock.core.errors import LmdockError
from lmdock.engine.process import rss_bytes
from lmdock.http.errors import error_from_exception, error_response, kind_for_status
from lmdock.http.metrics import metrics_response
from lmdock.http.middleware import HostPolicy, RequestContext
from lmdock.http.web import router as web_router
from lmdock.models.download_jobs import DownloadJobs
from lmdock.models.manager import ModelManager

log = logging.getLogger(__name__)


def create_app(settings: Settings, manager: ModelManager | None = None, *, preload: bool = True) -> FastAPI:
    manager = manager or ModelManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # app-wide services, one each, reached through lmdock.api.services
        app.state.request_log = RequestLogHub()
        app.state.download_jobs = DownloadJobs()
        tasks = [asyncio.create_task(_reap_idle(manager))]
        manager.upstreams.start()  # health checks of upstream nodes
        if preload and manager.upstreams.get(manager.default_key) is None:
            tasks.append(asyncio.create_task(_preload(app, manager)))
        tasks.append(start_batch_runner(app))
        yield
        for task in tasks:
            task.cancel()
        await manager.close()
        db = getattr(app.state, "db", None)  # storage.database(app), opened on first use
        if db is not None:
            db.close()

    app = FastAPI(title="lmdock", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.manager = manager
    app.state.settings = settings
    app.state.load_error = None
    ChatSession.grammar_timeout = settings.limits.grammar_timeout
    app.add_middleware(
        RequestContext,
        api_keys=settings.api_keys,
        admin_keys=settings.admin_keys,
        max_body_bytes=settings.max_body_bytes,
        hosts=HostPolicy(settings.host, settings.allowed_hosts),
        cors_origins=settings.cors_origins,
    )
    if settings.cors_origins:  # outside RequestContext: answers allowed preflights, labels its errors
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["request-id"],
        )
    app.add_middleware(RequestLogMiddleware)
    _install_error_handlers(app)
    app.include_router(anthropic_router)
    app.include_router(batches_router)
    app.include_router(openai_router)
    app.include_router(responses_router)
    app.include_router(native_router)
    app.include_router(web_router)  # the web app at / (a client of the routes above)

    @app.get("/health")
    async def health():
        loading = sorted(manager.loading)
        return {
            "status": "loading" if loading else "ok",
            "loaded": sorted(manager.loaded),
            "loading": loading,
            "load_error": app.state.load_error,
            "version": __version__,
            # each loaded model's worker process: status, pid, crashes, last crash, restart time
            "workers": {key: m.engine.report() for key, m in manager.loaded.items()},
            "server_rss_bytes": rss_bytes(os.getpid()),
            "failed": dict(manager.failed),
            # /health needs no key: with one, where the upstream nodes live is not its to tell
            "upstreams": {u.key: u.status(urls=not settings.api_keys) for u in manager.upstreams},
        }

    @app.api_route("/api/hello", methods=["GET", "HEAD"])
    async def hello():
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics():
        return metrics_response(manager)

    return app


async def _preload(app: FastAPI, manager: ModelManager) -> None:
    try:
        await manager.load(manager.default_key)
    except LmdockError as exc:
        app.state.load_error = exc.message
        if manager.records():  # with no model at all, `lmdock serve` has said how to get one
            log.error("default model not loaded: %s", exc.message)


async def _reap_idle(manager: ModelManager, every: float = 30.0) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await manager.unload_idle()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LmdockError)
    async def on_lmdock_error(request: Request, exc: LmdockError):
        return error_from_exception(request, exc)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            message = f"Not found: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} not allowed for {request.url.path}"
        return error_response(request, exc.status_code, kind_for_status(exc.status_code), message)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return error_response(request, 400, "invalid_request_error", f"{loc}: {first.get('msg')}".strip(": "))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "api_error", "Internal server error")
