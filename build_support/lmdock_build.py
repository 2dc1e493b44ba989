"""lmdock's build backend: setuptools, with the web app built into the package before a wheel or sdist.

A wheel without the web app would serve a page at `/` that says how to build what a wheel user cannot
build. So building a wheel or an sdist from a checkout first builds the web app (`web/`, with npm) when
it is missing or older than its sources; without npm, a missing app stops the build with a clear message
(an older one is packaged, with a warning). An sdist carries the built app (package data), so a wheel
built from it (pip, `python -m build`) needs no Node.
Editable installs (`make install`) are left alone: there the web app is `make web`'s job.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every PEP 517 hook this module does not wrap)

WEB = Path("web")  # PEP 517 runs the hooks in the source tree's root
WEBAPP_INDEX = Path("src/lmdock/http/webapp/index.html")  # web/build.mjs writes it


def _newest_source(web: Path) -> float:
    sources = [web / "index.html", web / "build.mjs", web / "package-lock.json", web / "tsconfig.json"]
    sources += [p for p in (web / "src").rglob("*") if p.is_file()]
    return max(p.stat().st_mtime for p in sources if p.is_file())


def _npm(*args: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "lmdock's wheel carries its web app, built from web/ with npm: install Node.js 20+ and npm, "
            "then build again (or build from an lmdock sdist, which carries the built app)"
        )
    subprocess.run([npm, *args], cwd=WEB, check=True)


def ensure_webapp() -> None:
    """Build the web app into the package unless an up-to-date build is already there."""
    if not (WEB / "package.json").is_file():  # an sdist: it carries the built app
        if not WEBAPP_INDEX.is_file():
            raise SystemExit(f"this lmdock source tree has neither web/ nor a built web app ({WEBAPP_INDEX})")
        return
    if WEBAPP_INDEX.is_file() and WEBAPP_INDEX.stat().st_mtime >= _newest_source(WEB):
        return
    if WEBAPP_INDEX.is_file() and shutil.which("npm") is None:
        print(
            "warning: web/ changed since the web app was built, and npm is not here to rebuild it; "
            "packaging the web app as built",
            file=sys.stderr,
        )
        return
    installed = WEB / "node_modules" / ".package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < (WEB / "package-lock.json").stat().st_mtime:
        _npm("ci", "--no-audit", "--no-fund", "--loglevel=error")
    _npm("run", "--silent", "build")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    ensure_webapp()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    ensure_webapp()
    return _setuptools.build_sdist(sdist_directory, config_settings)
