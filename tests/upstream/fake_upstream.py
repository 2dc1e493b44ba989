"""A tiny OpenAI-style upstream that misbehaves on purpose. The first path segment picks the behaviour,
so one server is many upstreams: `http://127.0.0.1:PORT/hang` hangs, `/garbage` answers junk, etc.
Every POST body (and its Authorization header) is kept for the test to inspect at `GET /<mode>/_requests`;
`GET /<mode>/_streams` says how many of its answers are still being written and how many bytes the
hostile modes (endless bodies and streams) got out before their reader hung up.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTEXT_BODY = (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(4500 in the messages, 500 in the completion). Please reduce the length of the messages or completion."
)


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
FLOOD_LIMIT = 300 << 20  # what an endless body sends at most (the "256 MB error body" of issue 22)


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.stop = threading.Event()
        self.open_streams: Counter[str] = Counter()  # answers still being written, per mode
        self.sent: Counter[str] = Counter()  # bytes the endless answers wrote, per mode
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, ctype: str = "application/json", headers=None) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _sse(self, chunks: list[dict[str, Any]], stall: bool = False) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for c in chunks:
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()
                if stall:
                    fake.stop.wait(120)
                    return
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            @contextlib.contextmanager
            def _streaming(self, mode: str):
                with fake._lock:
                    fake.open_streams[mode] += 1
                try:
                    yield
                except OSError:  # the reader hung up: what a well-behaved client of ours does
                    pass
                finally:
                    with fake._lock:
                        fake.open_streams[mode] -= 1

            def _endless(self, mode: str, status: int, ctype: str, head: bytes, piece: bytes, pause=0.0):
                """`head`, then `piece` again and again until the reader hangs up (or FLOOD_LIMIT)."""
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                with self._streaming(mode):
                    self.wfile.write(head)
                    while fake.sent[mode] < FLOOD_LIMIT and not fake.stop.is_set():
                        self.wfile.write(piece)
                        self.wfile.flush()
                        fake.sent[mode] += len(piece)
                        if pause:
                            time.sleep(pause)

            def do_GET(self) -> None:
                mode, _, rest = self.path.strip("/").partition("/")
                if rest == "_requests":
                    self._send(200, fake.requests.get(mode, []))
                elif rest == "_streams":
                    self._send(200, {"open": fake.open_streams[mode], "sent": fake.sent[mode]})
                elif mode == "hugeprobe" and rest in ("v1/models", "props"):
                    self._endless(mode, 200, "application/json", b'{"data": [', b"1," * 32768)
                elif rest == "health":
                    self._send(200, {"status": "ok"})
                elif rest == "v1/models":
                    self._send(200, {"object": "list", "data": [{"id": f"fake-{mode}", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                mode, _, rest = self.path.strip("/").partition("/")
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                body["_authorization"] = self.headers.get("authorization")
                body["_path"] = rest
                fake.requests.setdefault(mode, []).append(body)
                if rest == "tokenize":
                    self._send(404, {"error": {"message": "no tokenizer here"}})
                    return
                getattr(self, f"mode_{mode}")(body)

            def mode_ok(self, body: dict) -> None:
                self._sse(
                    [
                        _chunk({"role": "assistant", "content": ""}),
                        _chunk({"content": "Hello"}),
                        _chunk({"content": " world"}),
                        _chunk({}, "stop"),
                        {"choices": [], "usage": USAGE},
                    ]
                )

            def mode_tools(self, body: dict) -> None:
                name = body["tools"][0]["function"]["name"] if body.get("tools") else "none"
                call = {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                pieces = ['{"loc', 'ation": "Pa', 'ris", "unit"', ': "celsius"}']
                chunks = [_chunk({"role": "assistant", "content": None, "tool_calls": [call]})]
                chunks += [
                    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces
                ]
                chunks += [_chunk({}, "tool_calls"), {"choices": [], "usage": USAGE}]
                self._sse(chunks)

            def mode_bare(self, body: dict) -> None:  # a tool call printed as text, as small models do
                text = '{"name": "get_weather", "arguments": {"location": "Paris"}}'
                chatter = [_chunk({"content": ". The weather in Paris is sunny."}), _chunk({}, "length")]
                self._sse([_chunk({"content": text[:20]}), _chunk({"content": text[20:]}), *chatter])

            def mode_garbage(self, body: dict) -> None:
                self._send(200, b"<html>this is not an API</html>", "text/plain")

            def mode_jsongarbage(self, body: dict) -> None:
                self._send(200, {"hello": "world"})

            def mode_hang(self, body: dict) -> None:
                fake.stop.wait(120)

            def mode_stall(self, body: dict) -> None:
                self._sse([_chunk({"role": "assistant", "content": "Hel"})], stall=True)

            def mode_midfail(self, body: dict) -> None:  # vLLM reports a failure after streaming began so
                self._sse([_chunk({"content": "Hel"}), {"error": {"message": "engine crashed", "code": 500}}])

            def mode_boom(self, body: dict) -> None:
                self._send(500, {"error": {"message": "CUDA error: out of memory", "type": "server_error"}})

            def mode_overflow(self, body: dict) -> None:
                self._send(400, {"error": {"message": CONTEXT_BODY, "type": "BadRequestError", "code": 400}})

            def mode_clamp(self, body: dict) -> None:
                if body.get("max_tokens", 0) > 100:
                    message = (
                        "This model's maximum context length is 1000 tokens. However, you requested "
                        f"{900 + body['max_tokens']} tokens (900 in the messages, {body['max_tokens']} in the "
                        "completion). Please reduce the length of the messages or completion."
                    )
                    self._send(400, {"error": {"message": message}})
                    return
                self._sse([_chunk({"content": "long answer"}), _chunk({}, "length")])

            def mode_busy(self, body: dict) -> None:
                self._send(503, {"error": {"message": "server busy"}}, headers={"retry-after": "7"})

            # --- hostile: huge bodies, endless streams --------------------------------------------

            def mode_hugeerror(self, body: dict) -> None:
                self._endless("hugeerror", 500, "application/json", b'{"error": {"message": "', b"E" * 65536)

            def mode_longerror(self, body: dict) -> None:  # under the body cap, with a 100 KB message
                self._send(400, {"error": {"message": "L" * 100_000}})

            def mode_hugejson(self, body: dict) -> None:
                self._endless("hugejson", 200, "application/json", b'{"choices": ["', b"J" * 65536)

            def mode_hugeline(self, body: dict) -> None:
                head = b'data: {"choices": [{"index": 0, "delta": {"content": "'
                self._endless("hugeline", 200, "text/event-stream", head, b"S" * 65536)

            def mode_hugechunk(self, body: dict) -> None:  # 3 MB of text in one chunk, whatever max_tokens
                self._sse([_chunk({"content": "C" * (3 << 20)}), _chunk({}, "stop")])

            def mode_endless(self, body: dict) -> None:  # ignores max_tokens
                piece = f"data: {json.dumps(_chunk({'content': 'tok '}))}\n\n".encode()
                self._endless("endless", 200, "text/event-stream", b"", piece)

            def mode_slow(self, body: dict) -> None:  # an endless stream at a token every 20 ms
                piece = f"data: {json.dumps(_chunk({'content': 'tok '}))}\n\n".encode()
                self._endless("slow", 200, "text/event-stream", b"", piece, pause=0.02)

            def mode_hugeprobe(self, body: dict) -> None:
                self.mode_ok(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeUpstream:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        time.sleep(0.1)
        self.server.server_close()
