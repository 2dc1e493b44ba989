"""The worker process of one loaded model: `python -m lmdock.engine.worker FD`.

It owns everything that runs llama.cpp for the model (weights, context, the engine thread, llguidance
matchers, the embeddings context), so a native fault kills this process and never the server. The
server's supervisor (engine/proxy.py) sends a WorkerConfig, then requests; the engine thread sends back
one message per step carrying the new events of every sequence.

`--probe PATH` is the CPU self-check instead (engine/cpu_check.py): load with llama.cpp's extra buffer
types, decode a few tokens, exit 0; a crash shows as a signal in the exit status.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lmdock.core.errors import LmdockError
from lmdock.engine.ipc import Channel, EngineState, WorkerInfo, encode_error

log = logging.getLogger("lmdock.worker")

TEST_CRASH_ENV = "LMDOCK_TEST_CRASH"  # tests only: "probe" | "first_decode", optionally "@<model key>"


@dataclass
class WorkerConfig:
    key: str
    path: str
    params: object  # ContextParams (kept untyped so importing this module stays light)
    engine: object  # EngineConfig
    cache_ram_bytes: int
    cache_dir: str | None
    cache_disk_bytes: int
    max_ctx: int
    log_level: str = "INFO"


def test_crash(point: str, key: str) -> None:
    """Kill this process with SIGSEGV at `point` when the test switch asks for it (never set in use)."""
    wanted = os.environ.get(TEST_CRASH_ENV, "")
    if not wanted:
        return
    what, _, only = wanted.partition("@")
    if what == point and (not only or only == key):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)


def warm_up(llama, n_prefill: int, n_decode: int) -> None:
    """Decode a short prompt and a few single tokens in sequence 0, then clear the KV: the kernels a real
    request uses have run once (a CPU-specific crash shows here, before the worker says it is ready)."""
    import llama_cpp as L

    from lmdock.engine.batch import Batch

    tokens = llama.tokenize("The quick brown fox jumps over the lazy dog. " * 4)[:n_prefill] or [0]
    batch = Batch(max(len(tokens), 1))
    try:
        for i, t in enumerate(tokens):
            batch.add(t, i, 0, i == len(tokens) - 1)
        if L.llama_decode(llama.ctx, batch.raw) != 0:
            raise LmdockError("warm-up decode failed")
        pos = len(tokens)
        for _ in range(n_decode):
            batch.clear()
            batch.add(tokens[pos % len(tokens)], pos, 0, True)
            if L.llama_decode(llama.ctx, batch.raw) != 0:
                raise LmdockError("warm-up decode failed")
            pos += 1
    finally:
        batch.close()
        L.llama_memory_clear(llama.memory, True)


def cache_layout(llama) -> str:
    """Everything besides the model file that decides whether a saved KV state can be loaded into this
    context: the K and V element types, and whether flash attention runs (without it V is stored
    transposed); llama.cpp also rotates quantized K/V unless LLAMA_ATTN_ROT_DISABLE is set. States saved
    under another layout live in another folder, so they are misses, never loaded. The context size is
    not part of it: a state loads into any context with room for it (PromptCache skips longer ones), so
    a context chosen from the free memory may change without losing the cache."""
    kv = llama.params.kv
    rot = os.environ.get("LLAMA_ATTN_ROT_DISABLE", "")
    return f"k={kv.type_k}|v={kv.type_v}|fa={llama.flash_attn}|rot={rot}"


def _build_tokenizer(constraints) -> None:
    try:
        constraints.tokenizer  # noqa: B018  (the property builds and keeps it)
    except Exception:
        log.exception("building the llguidance tokenizer failed; it is retried on first use")


class Worker:
    """The request side of the worker: receives on the main thread, streams events from the engine's."""

    def __init__(self, channel: Channel, config: WorkerConfig) -> None:
        from lmdock.chat.grammar import special_tokens_of
        from lmdock.engine.constraint import ConstraintFactory
        from lmdock.engine.engine import Engine
        from lmdock.engine.llama_model import LlamaModel
        from lmdock.engine.prompt_cache import PromptCache, model_fingerprint

        self.channel = channel
        self.config = config
        started = time.monotonic()
        self.llama = LlamaModel(Path(config.path), config.params, default_ctx_cap=config.max_ctx)
        # llguidance's tokenizer (about 1 s of Python) builds while the warm-up decode holds no GIL
        constraints = ConstraintFactory(self.llama.vocab, self.llama.n_vocab)
        builder = threading.Thread(target=_build_tokenizer, args=(constraints,), name="lltokenizer")
        builder.start()
        try:
            test_crash("first_decode", config.key)
            warm_up(self.llama, 4, 1)
        finally:
            builder.join()
        cache_dir = None
        if config.cache_dir is not None:
            key = model_fingerprint(self.llama.path, cache_layout(self.llama))
            cache_dir = Path(config.cache_dir) / key
        cache = PromptCache(
            ram_bytes=config.cache_ram_bytes,
            disk_dir=cache_dir,
            disk_bytes=config.cache_disk_bytes,
            max_tokens=self.llama.n_ctx,
        )
        self._outbox: list[tuple[int, object]] = []
        self._seqs: dict[int, object] = {}
        self.engine = Engine(
            self.llama, config.engine, cache, on_step=self.flush, on_failure=self._engine_failed
        )
        if constraints._tokenizer is not None:
            self.engine.constraints = constraints
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="worker-call")
        self._embedder = None
        import llama_cpp as L

        self.info = WorkerInfo(
            pid=os.getpid(),
            n_ctx=self.llama.n_ctx,
            n_vocab=self.llama.n_vocab,
            n_embd=int(L.llama_model_n_embd(self.llama.model)),
            chat_template=self.llama.chat_template(),
            bos_text=self.llama.token_text(self.llama.bos_id),
            eos_text=self.llama.token_text(self.llama.eos_id),
            special_tokens=special_tokens_of(self.engine.constraints.tokenizer),
            buffer_types=dict(self.llama.buffer_types),
            load_seconds=time.monotonic() - started,
            flash_attn=self.llama.flash_attn,
            context_buffers=dict(self.llama.context_buffers),
        )

    # --- engine thread -----------------------------------------------------------------------------

    def _emitter(self, rid: int):
        from lmdock.engine.types import Finished

        def emit(event) -> None:
            self._outbox.append((rid, event))
            if isinstance(event, Finished):
                self._seqs.pop(rid, None)

        return emit

    def _engine_failed(self, why: str) -> None:
        """The engine thread stopped after internal errors: end the process, so the supervisor sees it
        (the model restarts, or is marked failed) instead of a live worker that refuses every request."""
        log.critical("engine stopped (%s); the worker exits", why)
        self.flush()
        os._exit(70)

    def flush(self) -> None:
        """Send every event since the last flush as one message (called once per engine step)."""
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        self.channel.send(("events", batch, self.state()))

    def state(self) -> EngineState:
        from dataclasses import astuple

        e = self.engine
        return EngineState(e.queue_depth, e.active_count, e.last_activity, astuple(e.stats))

    # --- main thread -------------------------------------------------------------------------------

    def serve(self) -> None:
        self.channel.send(("ready", self.info))
        while True:
            try:
                msg = self.channel.recv()
            except (EOFError, OSError):
                os._exit(0)  # the server is gone: nobody to answer
            kind = msg[0]
            if kind == "submit":
                self._submit(msg[1], msg[2])
            elif kind == "cancel":
                seq = self._seqs.get(msg[1])
                if seq is not None:
                    self.engine.cancel(seq)
            elif kind == "call":
                self._calls.submit(self._call, msg[1], msg[2], msg[3])
            elif kind == "close":
                self.close()
                return

    def _submit(self, rid: int, request) -> None:
        from lmdock.engine.sequence import Phase

        try:
            seq = self.engine.enqueue(request, self._emitter(rid))
        except Exception as exc:  # an error before the first event keeps its status in the server
            self.channel.send(("ack", rid, encode_error(exc)))
            return
        self._seqs[rid] = seq
        if seq.phase is Phase.DONE:  # finished before we stored it
            self._seqs.pop(rid, None)
        self.channel.send(("ack", rid, None))

    def _call(self, cid: int, name: str, args: tuple) -> None:
        try:
            value = getattr(self, f"call_{name}")(*args)
            self.channel.send(("reply", cid, True, value))
        except Exception as exc:
            if not isinstance(exc, LmdockError):
                log.exception("worker call %s failed", name)
            self.channel.send(("reply", cid, False, encode_error(exc)))

    def call_snapshot(self) -> dict:
        return self.engine.snapshot()

    def call_embed(self, inputs: list) -> tuple[list, int]:
        """Pooled, normalised embeddings of texts or token lists, and the number of tokens embedded."""
        from lmdock.engine.embeddings import Embedder

        if self._embedder is None:
            self._embedder = Embedder(Path(self.config.path), n_threads=self.config.params.n_threads)
        vectors, n_tokens = [], 0
        for item in inputs:
            tokens = self._embedder.tokenize(item) if isinstance(item, str) else item
            vectors.append(self._embedder.embed(tokens))
            n_tokens += len(tokens)
        return vectors, n_tokens

    def close(self) -> None:
        self.engine.close()
        self.flush()
        if self._embedder is not None:
            self._embedder.close()


def _probe(path: str, key: str, n_threads: int, extra_bufts: bool, kv) -> int:
    """Load with (or without) extra buffer types and decode a few tokens with the KV cache `kv`; exit
    status 0 when that worked."""
    from lmdock.engine.llama_model import ContextParams, LlamaModel

    params = ContextParams(n_ctx=512, n_batch=64, n_ubatch=64, n_seq_max=1, n_threads=n_threads, kv=kv)
    params.use_extra_bufts = extra_bufts
    llama = LlamaModel(Path(path), params)
    if extra_bufts:
        test_crash("probe", key)
    warm_up(llama, 32, 4)
    print(
        f"probe ok: buffers {llama.buffer_types}, KV {kv.label}, flash attention {llama.flash_attn}",
        file=sys.stderr,
    )
    llama.close()
    return 0


def _die_with_engine(args) -> None:
    """An exception that escapes a worker thread ends the process: the supervisor restarts it."""
    log.critical("worker thread %s died: %r", getattr(args.thread, "name", "?"), args.exc_value)
    sys.stderr.flush()
    os._exit(70)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server stops us
    if argv and argv[0] == "--probe":
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from lmdock.core.kv_cache import KvCacheConfig

        return _probe(argv[1], argv[2], int(argv[3]), argv[4] == "on", KvCacheConfig(*argv[5:8]))
    channel = Channel(int(argv[0]))
    config: WorkerConfig = channel.recv()[1]
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker[{config.key}] %(name)s: %(message)s",
    )
    threading.excepthook = _die_with_engine
    try:
        worker = Worker(channel, config)
    except LmdockError as exc:
        channel.send(("failed", exc.message))
        return 2
    except Exception as exc:
        log.exception("loading %s failed", config.key)
        channel.send(("failed", f"failed to load {config.key}: {exc}"))
        return 2
    worker.serve()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
