"""A tiny stand-in for the Hugging Face Hub, just the endpoints huggingface_hub calls for downloads.

- `GET /api/models/{repo}/revision/{rev}`: the repo's file list (with sizes and LFS sha256s);
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: X-Repo-Commit, ETag / X-Linked-Etag (the sha256),
  X-Linked-Size, and Range requests answered with 206.

Files can be served slowly (to kill a download midway) or with bytes that do not match their advertised
sha256 (a corrupt transfer). Every request is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_gguf(path: Path, *, name: str = "Tiny Test", pad_floats: int = 0) -> Path:
    """A valid GGUF with a tokenizer and optionally one padding tensor, but no model weights:
    a real file to download, which llama.cpp refuses to load."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(2048)
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "<|endoftext|>"])
    writer.add_token_types([1, 1, 1, 3])
    writer.add_token_merges(["a b"])
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}{% if tools %}{% endif %}")
    if pad_floats:
        writer.add_tensor("padding", np.arange(pad_floats, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@dataclass
class HubFile:
    data: bytes
    corrupt: bool = False  # serve other bytes than the sha256 advertised

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def served(self) -> bytes:
        return self.data[:-1] + bytes([self.data[-1] ^ 0xFF]) if self.corrupt else self.data


@dataclass
class FakeHub:
    repos: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    bytes_per_second: float | None = None  # throttle for GET bodies
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def add(self, repo: str, filename: str, data: bytes, *, corrupt: bool = False) -> HubFile:
        hub_file = self.repos.setdefault(repo, {})[filename] = HubFile(data, corrupt)
        return hub_file

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def ranged_gets(self, filename: str) -> list[str]:
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + filename) and r]

    # --- request handling --------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        listing = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if listing:
            return self._listing(h, listing.group(1))
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not resolve:
            return self._error(h, 404, "RepoNotFound")
        repo, filename = resolve.group(1), resolve.group(3)
        if repo not in self.repos:
            return self._error(h, 404, "RepoNotFound")
        hub_file = self.repos[repo].get(filename)
        if hub_file is None:
            return self._error(h, 404, "EntryNotFound")
        self._file(h, hub_file, body)

    def _listing(self, h: BaseHTTPRequestHandler, repo: str) -> None:
        if repo not in self.repos:
            return self._error(h, 404, "RepoNotFound")
        siblings = [
            {
                "rfilename": name,
                "size": len(f.data),
                "blobId": hashlib.sha1(f.data).hexdigest(),
                "lfs": {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134},
            }
            for name, f in self.repos[repo].items()
        ]
        payload = json.dumps({"id": repo, "sha": COMMIT, "siblings": siblings}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _file(self, h: BaseHTTPRequestHandler, hub_file: HubFile, body: bool) -> None:
        data = hub_file.served
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if ranged and body:
            start = int(ranged.group(1))
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{hub_file.sha256}"')
        h.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
        h.send_header("X-Linked-Size", str(len(hub_file.data)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        chunk = 64 << 10
        try:
            for at in range(start, len(data), chunk):
                h.wfile.write(data[at : at + chunk])
                h.wfile.flush()
                if self.bytes_per_second:
                    time.sleep(chunk / self.bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str) -> None:
        payload = json.dumps({"error": code}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)
