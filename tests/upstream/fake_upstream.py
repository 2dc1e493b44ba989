"""A tiny OpenAI-style upstream that misbehaves on purpose. The first path segment picks the behaviour,
so one server is many upstreams: `http://127.0.0.1:PORT/hang` hangs, `/garbage` answers junk, etc.
Every POST body (and its Authorization header) is kept for the test to inspect at `GET /<mode>/_requests`.
"""

from __future__ import annotations

import json
import threading
import time
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


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.stop = threading.Event()
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

            def do_GET(self) -> None:
                mode, _, rest = self.path.strip("/").partition("/")
                if rest == "_requests":
                    self._send(200, fake.requests.get(mode, []))
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
