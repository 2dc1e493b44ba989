"""GGUF downloads from Hugging Face repos into the store, resumable across restarts and verified.

huggingface_hub resolves files (HEAD: size, etag = the LFS sha256, CDN location) and streams them, but
its own `hf_hub_download` deletes a partial file when a process dies, so a killed download would start
over. Here bytes go to `<file>.<etag>.partial` beside the target and continue with a Range request on
the next attempt; the finished file is checked against the hub's hash before it is moved into place,
so the store never lists a partial or corrupt model.

A download that does not fit is refused before its first byte (it must leave the disk some headroom for
the database), and one that runs out of space anyway (something else filled the disk) deletes its
partial file, so the rest of the server keeps working: a full disk is a clear error, never a wedge.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
from filelock import FileLock
from huggingface_hub import HfApi, HfFileMetadata, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from lmdock.core.disk import shortfall
from lmdock.core.errors import DownloadFailed, InsufficientStorage, InvalidRequest, ModelNotFound

Progress = Callable[[int], None]

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
_PREFERRED = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0")
_CHUNK = 8 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class DownloadSpec:
    """What to fetch: a repo, optionally one file in it, optionally a quantization to pick."""

    repo_id: str
    filename: str | None = None
    revision: str = "main"
    quantization: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    repo_id: str
    filename: str
    revision: str = "main"
    size: int | None = None


def parse_spec(text: str, quantization: str | None = None) -> DownloadSpec:
    """`publisher/repo[/file.gguf][@quant]` or a huggingface.co URL; anything path-like is refused."""
    raw = text.strip()
    revision = "main"
    try:
        url = urlsplit(raw if "://" in raw else f"https://{raw}")
    except ValueError:  # an unbalanced "[" reads as a broken IPv6 host
        raise _not_a_repo(text) from None
    if url.hostname in _HF_HOSTS:
        raw = unquote(url.path).strip("/")
        for marker in ("/blob/", "/resolve/", "/tree/"):
            if marker in raw:
                head, tail = raw.split(marker, 1)
                revision, _, rest = tail.partition("/")
                raw = f"{head}/{rest}" if rest else head
    if "@" in raw:
        raw, _, quantization = raw.rpartition("@")
    parts = raw.split("/")
    if len(parts) < 2 or not all(_NAME_PART.match(p) for p in parts[:2]) or ".." in parts[:2]:
        raise _not_a_repo(text)
    filename = "/".join(parts[2:]) or None
    if filename is not None:
        _check_filename(filename)
    return DownloadSpec(f"{parts[0]}/{parts[1]}", filename, revision or "main", quantization or None)


def _not_a_repo(text: str) -> InvalidRequest:
    return InvalidRequest(
        f"model: '{text}' is not a Hugging Face repo; expected publisher/repo[/file.gguf]", param="model"
    )


def _check_filename(filename: str) -> None:
    parts = filename.split("/")
    if "\\" in filename or any(p in ("", ".", "..") for p in parts) or not filename.endswith(".gguf"):
        raise InvalidRequest(f"model: '{filename}' is not a .gguf file inside the repo", param="model")


def target_path(models_dir: Path, repo_id: str, filename: str) -> Path:
    """`<models_dir>/<publisher>/<repo>/<file>`, refusing anything that would land outside the store."""
    _check_filename(filename)
    root = models_dir.resolve()
    target = (root / repo_id / filename).resolve()
    if not target.is_relative_to(root) or target == root:
        raise InvalidRequest(f"model: '{repo_id}/{filename}' escapes the model store", param="model")
    return target


def plan_download(spec: DownloadSpec, endpoint: str | None = None) -> list[RemoteFile]:
    """The files a spec means: a named file (and its split parts), or the best GGUF of the repo plus
    its vision projector."""
    if spec.filename:
        return [
            RemoteFile(
                spec.repo_id, name, spec.revision, _remote_size(spec.repo_id, name, spec.revision, endpoint)
            )
            for name in _split_parts(spec.filename)
        ]
    with _hub_errors(spec.repo_id):
        info = HfApi(endpoint=endpoint).model_info(spec.repo_id, revision=spec.revision, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or [] if s.rfilename.endswith(".gguf")}
    models = [n for n in sizes if not Path(n).name.startswith("mmproj") and _is_first_part(n)]
    chosen = _choose(models, spec)
    files = [RemoteFile(spec.repo_id, n, spec.revision, sizes.get(n)) for n in _split_parts(chosen)]
    projectors = sorted((n for n in sizes if Path(n).name.startswith("mmproj")), key=lambda n: sizes[n] or 0)
    if projectors:
        files.append(RemoteFile(spec.repo_id, projectors[0], spec.revision, sizes[projectors[0]]))
    return files


def _remote_size(repo_id: str, filename: str, revision: str, endpoint: str | None) -> int | None:
    """HEAD one file: proves it exists before a job starts and gives the job its total."""
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    with _hub_errors(repo_id, filename):
        return get_hf_file_metadata(url, endpoint=endpoint).size


def _choose(models: list[str], spec: DownloadSpec) -> str:
    if not models:
        raise ModelNotFound(f"repository '{spec.repo_id}' has no GGUF model files", param="model")
    if spec.quantization:
        matching = [n for n in models if _has_quant(n, spec.quantization)]
        if not matching:
            raise ModelNotFound(
                f"no {spec.quantization} file in {spec.repo_id}; GGUF files: {', '.join(sorted(models))}",
                param="quantization",
            )
        return sorted(matching)[0]
    for quant in _PREFERRED:
        matching = [n for n in models if _has_quant(n, quant)]
        if matching:
            return sorted(matching)[0]
    return sorted(models)[0]


def _has_quant(name: str, quant: str) -> bool:
    return (
        re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", Path(name).name, re.I) is not None
    )


def _is_first_part(name: str) -> bool:
    split = _SPLIT.search(name)
    return split is None or split.group(1) == "00001"


def _split_parts(name: str) -> list[str]:
    """All parts of a split model named by its first part (llama.cpp loads them together)."""
    split = _SPLIT.search(name)
    if split is None or split.group(1) != "00001":
        return [name]
    total = int(split.group(2))
    stem = name[: split.start()]
    return [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1)]


class _ProgressSink:
    """Stands in for tqdm inside huggingface_hub's http_get and forwards byte counts."""

    def __init__(self, on_bytes: Progress | None, **_: object) -> None:
        self._on_bytes = on_bytes

    def update(self, n: int) -> None:
        if self._on_bytes:
            self._on_bytes(n)

    def __enter__(self) -> _ProgressSink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def download_file(
    remote: RemoteFile,
    models_dir: Path,
    *,
    endpoint: str | None = None,
    progress: Progress | None = None,
    resumed: Progress | None = None,
) -> Path:
    """Fetch one file into the store and return its path. `progress` gets each new chunk's size,
    `resumed` the bytes a partial file already held."""
    target = target_path(models_dir, remote.repo_id, remote.filename)
    url = hf_hub_url(remote.repo_id, remote.filename, revision=remote.revision, endpoint=endpoint)
    with _hub_errors(remote.repo_id, remote.filename):
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    if target.is_file() and (meta.size is None or target.stat().st_size == meta.size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(target.name + ".lock")
    try:
        with FileLock(lock):  # one downloader per file, across processes (CLI and server)
            _fetch(remote, meta, url, target, progress, resumed)
    finally:
        lock.unlink(missing_ok=True)
    return target


def _fetch(
    remote: RemoteFile,
    meta: HfFileMetadata,
    url: str,
    target: Path,
    progress: Progress | None,
    resumed: Progress | None,
) -> None:
    """Continue `<file>.<etag>.partial` where it stopped, verify it, move it into place."""
    etag = (meta.etag or "unknown").strip('"')
    part = target.with_name(f"{target.name}.{etag[:16]}.partial")
    for stale in target.parent.glob(f"{target.name}.*.partial"):  # from an older revision
        if stale != part:
            stale.unlink(missing_ok=True)
    resume = part.stat().st_size if part.exists() else 0
    if meta.size is not None and resume > meta.size:
        part.unlink()
        resume = 0
    _check_room(target, remote.filename, (meta.size or 0) - resume)
    if resumed and resume:
        resumed(resume)
    same_host = urlsplit(meta.location).hostname == urlsplit(url).hostname
    try:
        with _hub_errors(remote.repo_id, remote.filename), part.open("ab") as f:
            http_get(
                meta.location,
                f,
                resume_size=resume,
                headers=build_hf_headers() if same_host else {},  # no token for a CDN
                expected_size=meta.size,
                displayed_filename=remote.filename,
                tqdm_class=partial(_ProgressSink, progress),  # type: ignore[arg-type]
            )
    except OSError:  # only a full disk gets here (_hub_errors turns every other failure into DownloadFailed)
        part.unlink(missing_ok=True)  # give the space back: the server must keep working
        raise InsufficientStorage(
            f"the disk filled up while downloading {remote.filename} into {target.parent}; the partial "
            "file was removed: free some space and download again"
        ) from None
    _verify(part, etag, remote.filename)
    part.replace(target)


def _check_room(target: Path, name: str, remaining: int) -> None:
    """Refuse a download that would not leave the disk its headroom, before writing anything."""
    lacking, free, keep = shortfall(target.parent, remaining)
    if lacking:
        raise InsufficientStorage(
            f"not enough disk space to download {name}: it needs {remaining >> 20} MiB more, "
            f"{free >> 20} MiB is free in {target.parent}, and {keep >> 20} MiB is kept free for "
            "lmdock's database and cache"
        )


@contextlib.contextmanager
def _hub_errors(repo_id: str, filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and network failures into lmdock errors that name what was asked for."""
    what = f"{repo_id}/{filename}" if filename else repo_id
    try:
        yield
    except RepositoryNotFoundError:
        raise ModelNotFound(f"repository '{repo_id}' not found on the hub", param="model") from None
    except (RevisionNotFoundError, EntryNotFoundError):
        raise ModelNotFound(f"'{what}' not found on the hub", param="model") from None
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise  # the caller cleans up and says so
        raise DownloadFailed(f"download of {what} failed: {exc}") from None
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"download of {what} failed: {exc}") from None


def _verify(path: Path, etag: str, name: str) -> None:
    """Compare with the hub's hash: an LFS etag is the sha256, a plain one the git blob sha1."""
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        digest = hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        return  # no hash to compare with; http_get has already checked the size
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != etag:
        path.unlink(missing_ok=True)
        raise DownloadFailed(
            f"{name} is corrupt: checksum {digest.hexdigest()} does not match the hub's {etag}"
        )
