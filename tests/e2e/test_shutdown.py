"""Stopping the server: SIGTERM (a service manager) and Ctrl-C (a terminal) end the model's worker as
part of a clean shutdown, never as a crash that is counted, logged and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "sigterm-to-the-group"])
def test_a_signal_stops_the_server_without_a_worker_crash(tmp_path: Path, how: str):
    server = start_server(tmp_path, new_session=True)
    try:
        health = httpx.get(f"{server.base_url}/health", timeout=10).json()
        (worker,) = health["workers"].values()
        if how == "sigterm":
            server.proc.send_signal(signal.SIGTERM)
        elif how == "ctrl-c":  # a terminal sends SIGINT to the whole foreground process group
            os.killpg(server.proc.pid, signal.SIGINT)
        else:  # systemd's default KillMode=control-group: SIGTERM to every process of the service
            os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            rc = server.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not stop:\n{server.log()}")
    finally:
        server.stop()
    log = server.log()
    assert rc in (0, -signal.SIGTERM), log  # uvicorn re-raises SIGTERM once shut down, as daemons do
    assert "crash" not in log and "restarting its worker" not in log, log
    assert not _alive(worker["pid"])
