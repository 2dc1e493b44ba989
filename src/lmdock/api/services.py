"""The app-wide services routes use. Each is created once, in the app's lifespan (lmdock/app.py), and
kept on `app.state`; routes reach them only through these helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:
    from lmdock.models.download_jobs import DownloadJobs
    from lmdock.models.manager import ModelManager


def manager_of(request: Request) -> ModelManager:
    return request.app.state.manager


def download_jobs_of(request: Request) -> DownloadJobs:
    return request.app.state.download_jobs
