"""The engine's only door to llama.cpp for generation: KV operations, batches, decode, sampling, and
moving prompt state bytes in and out of sequences. It decides nothing; the scheduler and the prompt
cache do, and the engine loop hands their decisions here."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import llama_cpp as L

from lmdock.engine.batch import Batch
from lmdock.engine.gguf_header import read_gguf_header
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.logprobs import logits_row, token_logprob
from lmdock.engine.reuse import shift_blocker
from lmdock.engine.sampling import Sampler
from lmdock.engine.scheduler import Step
from lmdock.engine.sequence import Sequence
from lmdock.engine.slots import CopyPrefix, KvOp, MoveRun, Truncate
from lmdock.engine.types import TokenLogprob


class ModelRunner:
    """Applies one engine step at a time to a LlamaModel's context (engine thread only)."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self.ctx = model.ctx
        self.memory = model.memory
        self.n_batch = model.params.n_batch
        self._batch = Batch(self.n_batch)
        self.decode_seconds = 0.0
        self.last_seconds = 0.0  # the last decode's
        self.kv_version = 0  # counts KV operations and state loads (what cells sequences share may change)

    # --- KV memory ---------------------------------------------------------------------------------

    def apply(self, ops: list[KvOp]) -> None:
        self.kv_version += 1
        for op in ops:
            if isinstance(op, Truncate):
                L.llama_memory_seq_rm(self.memory, op.seq_id, op.keep, -1)
            elif isinstance(op, CopyPrefix):
                L.llama_memory_seq_cp(self.memory, op.src, op.dst, 0, op.n)
            elif isinstance(op, MoveRun):
                self._move(op)
            else:
                raise TypeError(f"unknown KV operation {op!r}")

    def _move(self, op: MoveRun) -> None:
        """Move cached cells to new positions (chunk_reuse.py): through the empty scratch sequence, so
        the shift touches only them; llama.cpp applies the K-shift at the next decode."""
        mem, end = self.memory, op.src_pos + op.n
        L.llama_memory_seq_cp(mem, op.src, op.scratch, op.src_pos, end)
        L.llama_memory_seq_rm(mem, op.src, op.src_pos, end)
        L.llama_memory_seq_add(mem, op.scratch, op.src_pos, end, op.dst_pos - op.src_pos)
        L.llama_memory_seq_cp(mem, op.scratch, op.dst, op.dst_pos, op.dst_pos + op.n)
        L.llama_memory_seq_rm(mem, op.scratch, -1, -1)

    def shift_blocker(self) -> str | None:
        """Why this model's cached KV cannot move to other positions (None: it can): its GGUF header,
        then llama.cpp's own view (sliding window, recurrent or hybrid state, M-RoPE, no RoPE)."""
        try:
            header = read_gguf_header(self.model.path)
            reason = shift_blocker(header.kv, header.array_lengths)
        except Exception as exc:  # unreadable header: do not shift
            reason = f"unreadable GGUF header ({exc})"
        if reason is not None:
            return reason
        model = self.model.model
        if reason is None and not L.llama_memory_can_shift(self.memory):
            reason = "llama.cpp cannot shift this model's KV cache"
        if reason is None and L.llama_model_n_swa(model) > 0:
            reason = "sliding-window attention"
        if reason is None and (L.llama_model_is_recurrent(model) or L.llama_model_is_hybrid(model)):
            reason = "recurrent state"
        if reason is None and L.llama_model_rope_type(model) == L.LLAMA_ROPE_TYPE_NONE:
            reason = "no RoPE"
        return reason

    def kv_pos_max(self, seq_id: int) -> int:
        return int(L.llama_memory_seq_pos_max(self.memory, seq_id))

    # --- one step ----------------------------------------------------------------------------------

    def decode(self, step: Step) -> bool:
        """Evaluate a step's tokens; False if the KV cache had no room (nothing was decoded).

        Sets `batch_index` on every sequence that gets logits to sample from (a decoding sequence's
        draft tokens get the rows after it)."""
        batch = self._batch
        batch.clear()
        for seq in step.decode:
            assert seq.pending is not None  # a decoding sequence has its next token
            pos, seq_id = seq.position, seq.held.seq_id
            seq.batch_index = batch.add(seq.pending, pos, seq_id, True)
            for i, token in enumerate(seq.draft, 1):  # verified in the same batch: logits for each
                batch.add(token, pos + i, seq_id, True)
        for plan in step.prefill:
            seq, seq_id = plan.seq, plan.seq.held.seq_id
            last = len(seq.prompt) - 1
            for i in range(seq.cursor, seq.cursor + plan.n_tokens):
                idx = batch.add(seq.prompt[i], i, seq_id, i == last)
                if i == last:
                    seq.batch_index = idx
        started = time.perf_counter()
        rc = L.llama_decode(self.ctx, batch.raw)
        self.last_seconds = time.perf_counter() - started
        self.decode_seconds += self.last_seconds
        if rc == 1:
            return False
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        return True

    def sample(self, seq: Sequence) -> int:
        """Sample the next token at the sequence's batch index, masked by its grammar if it has one."""
        assert seq.sampler is not None  # start_sampler ran at admission
        if seq.constraint is not None:
            seq.constraint.apply(L.llama_get_logits_ith(self.ctx, seq.batch_index))
        return seq.sampler.sample(self.ctx, seq.batch_index)

    def logprob(self, seq: Sequence, token: int, top: int) -> TokenLogprob:
        """The sampled token's log-probability and the `top` alternatives, from the logits row the
        sampler saw (after the grammar mask)."""
        row = logits_row(L.llama_get_logits_ith(self.ctx, seq.batch_index), self.model.n_vocab)
        return token_logprob(row, token, top, self.model.token_piece)

    def start_sampler(self, seq: Sequence) -> None:
        seq.sampler = Sampler(seq.request.sampling, self.model.n_vocab)

    def free_sampler(self, seq: Sequence) -> None:
        if seq.sampler is not None:
            seq.sampler.close()
        seq.sampler = None

    # --- prompt state bytes ------------------------------------------------------------------------

    def state_size(self, seq_id: int) -> int:
        """Bytes of a sequence's KV state (about what a saved state file takes)."""
        return int(L.llama_state_seq_get_size(self.ctx, ctypes.c_int32(seq_id)))

    def read_state(self, seq_id: int, max_bytes: int) -> bytearray | None:
        """A sequence's KV state (None if empty, unreadable or larger than `max_bytes`). llama.cpp writes
        straight into the returned buffer and `write_state` reads straight from it: a 12k-token state
        is 151 MB on the default model, and each copy of it took 70-85 ms here."""
        size = self.state_size(seq_id)
        if size <= 0 or size > max_bytes:
            return None
        data = bytearray(size)
        view = (ctypes.c_uint8 * size).from_buffer(data)
        written = L.llama_state_seq_get_data(self.ctx, view, size, ctypes.c_int32(seq_id))
        del view  # a buffer with a ctypes view on it cannot be resized
        if written <= 0:
            return None
        del data[written:]
        return data

    def write_state(self, seq_id: int, data: bytearray) -> bool:
        self.kv_version += 1
        view = (ctypes.c_uint8 * len(data)).from_buffer(data)
        return L.llama_state_seq_set_data(self.ctx, view, len(data), ctypes.c_int32(seq_id)) > 0

    def save_file(self, seq_id: int, path: Path, tokens: list[int]) -> bool:
        arr = (L.llama_token * len(tokens))(*tokens)
        return (
            L.llama_state_seq_save_file(
                self.ctx, str(path).encode(), ctypes.c_int32(seq_id), arr, len(tokens)
            )
            > 0
        )

    def load_file(self, seq_id: int, path: Path, n_tokens: int) -> bool:
        """Load a state file saved with `n_tokens` tokens. The file must have been verified: llama.cpp
        aborts the process on a truncated one."""
        self.kv_version += 1
        n_out = ctypes.c_size_t(0)
        tokens = (L.llama_token * n_tokens)()
        ok = L.llama_state_seq_load_file(
            self.ctx, str(path).encode(), ctypes.c_int32(seq_id), tokens, n_tokens, ctypes.pointer(n_out)
        )
        return ok > 0 and n_out.value == n_tokens

    def close(self) -> None:
        self._batch.close()
