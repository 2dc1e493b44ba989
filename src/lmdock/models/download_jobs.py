"""Download jobs for the management API: one background thread per job, progress readable any time."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lmdock.core.errors import LmdockError, ModelNotFound
from lmdock.models.downloads import RemoteFile, download_file, target_path
from lmdock.models.store import record_for

Status = Literal["downloading", "completed", "failed", "already_downloaded"]


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z") if ts else None


@dataclass
class DownloadJob:
    files: list[RemoteFile]
    models_dir: Path
    job_id: str = field(default_factory=lambda: "job_" + secrets.token_hex(5))
    status: Status = "downloading"
    total_size_bytes: int = 0
    downloaded_bytes: int = 0
    started_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    error: str | None = None
    paths: list[Path] = field(default_factory=list)
    _resumed_bytes: int = 0

    @property
    def model_key(self) -> str:
        first = target_path(self.models_dir, self.files[0].repo_id, self.files[0].filename)
        return record_for(first, self.models_dir).key

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "model": self.model_key,
            "files": [f"{f.repo_id}/{f.filename}" for f in self.files],
            "total_size_bytes": self.total_size_bytes,
            "downloaded_bytes": min(self.downloaded_bytes, self.total_size_bytes or self.downloaded_bytes),
            "started_at": _iso(self.started_at),
        }
        if self.status == "downloading":
            elapsed = max(time.time() - self.started_at, 1e-3)
            speed = (self.downloaded_bytes - self._resumed_bytes) / elapsed
            out["bytes_per_second"] = round(speed, 1)
            left = self.total_size_bytes - self.downloaded_bytes
            if speed > 0 and left >= 0:
                out["estimated_completion"] = _iso(time.time() + left / speed)
        if self.completed_at:
            out["completed_at"] = _iso(self.completed_at)
        if self.error:
            out["error"] = self.error
        return out

    def _advance(self, n: int) -> None:
        self.downloaded_bytes += n

    def _resume(self, n: int) -> None:
        self.downloaded_bytes += n
        self._resumed_bytes += n

    def run(self, endpoint: str | None) -> None:
        """Fetch every file in order; runs in the job's own thread."""
        try:
            for remote in self.files:
                before = self.downloaded_bytes
                self.paths.append(
                    download_file(
                        remote,
                        self.models_dir,
                        endpoint=endpoint,
                        progress=self._advance,
                        resumed=self._resume,
                    )
                )
                if self.downloaded_bytes == before:  # already present: count it as done
                    self.downloaded_bytes += self.paths[-1].stat().st_size
            self.status = "completed"
        except LmdockError as exc:
            self.status, self.error = "failed", exc.message
        except Exception as exc:  # a job thread must always end with a status
            self.status, self.error = "failed", f"download failed: {exc}"
        self.completed_at = time.time()


class DownloadJobs:
    """The jobs this server started, by id."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        self.jobs: dict[str, DownloadJob] = {}

    def start(self, files: list[RemoteFile], models_dir: Path) -> DownloadJob:
        job = DownloadJob(files=files, models_dir=models_dir)
        job.total_size_bytes = sum(f.size or 0 for f in files)
        targets = [target_path(models_dir, f.repo_id, f.filename) for f in files]
        if all(
            t.is_file() and (f.size is None or t.stat().st_size == f.size)
            for t, f in zip(targets, files, strict=True)
        ):
            job.status, job.paths, job.completed_at = "already_downloaded", targets, time.time()
            job.downloaded_bytes = job.total_size_bytes = sum(t.stat().st_size for t in targets)
        else:
            threading.Thread(target=job.run, args=(self.endpoint,), name=job.job_id, daemon=True).start()
        self.jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> DownloadJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ModelNotFound(f"download job '{job_id}' not found", param="job_id")
        return job
