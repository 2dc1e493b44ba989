"""The app-wide services routes use. Each is created once, in the app's lifespan (lmdock/app.py), and
kept on `app.state`; routes reach them only through these helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from lmdock.core.owner import ANONYMOUS, Principal

if TYPE_CHECKING:
    from lmdock.core.config import Settings
    from lmdock.models.download_jobs import DownloadJobs
    from lmdock.models.manager import ModelManager


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def manager_of(request: Request) -> ModelManager:
    return request.app.state.manager


def download_jobs_of(request: Request) -> DownloadJobs:
    return request.app.state.download_jobs


def principal_of(request: Request) -> Principal:
    """Whom the request acts for (set by the auth middleware): owner of what it stores and reads."""
    return getattr(request.state, "principal", ANONYMOUS)
