"""Chunk reuse on slot data: which slot a prompt takes runs from, and the KV ops that move them."""

from __future__ import annotations

import random
from types import SimpleNamespace

from lmdock.engine.chunk_reuse import claim_with_runs, release_source, splice
from lmdock.engine.reuse import HOLE
from lmdock.engine.runner import ModelRunner
from lmdock.engine.scheduler import Scheduler, SchedulerConfig
from lmdock.engine.sequence import Sequence
from lmdock.engine.slots import CopyPrefix, MoveRun, SlotPool, Truncate
from lmdock.engine.types import EngineRequest


def _rand(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, 50000) for _ in range(n)]


HEAD, TOOLS, TAIL = _rand(100, 1), _rand(1000, 2), _rand(50, 3)
OLD = HEAD + [11, 12] + TOOLS + TAIL
NEW = HEAD + [21, 22, 23] + TOOLS + _rand(20, 4)


def _pool(n: int = 4) -> SlotPool:
    pool = SlotPool(n)
    pool.slots[0].tokens = list(OLD)
    return pool


def test_claim_takes_a_free_slot_and_pins_the_source():
    pool = _pool()
    rc = claim_with_runs(pool, NEW, 64, prefix_reuse=100)
    assert rc is not None
    src, dst = pool.slots[0], rc.claim.slot
    assert dst is not src and src.busy and dst.busy
    assert rc.claim.ops == [Truncate(dst.seq_id, 0), CopyPrefix(0, dst.seq_id, 100)]
    assert dst.tokens == HEAD and rc.claim.reused == 100 + 1000
    assert [(r.src, r.dst, r.length) for r in rc.runs] == [(102, 103, 1000)]


def test_no_claim_when_runs_gain_little_or_no_second_slot():
    pool = _pool()
    assert claim_with_runs(pool, OLD + [5], 64, prefix_reuse=len(OLD)) is None
    one = _pool(1)
    assert claim_with_runs(one, NEW, 64, prefix_reuse=100) is None


def test_splice_moves_the_run_and_leaves_holes():
    pool = _pool()
    rc = claim_with_runs(pool, NEW, 64, prefix_reuse=100)
    dst, src = rc.claim.slot, pool.slots[0]
    dst.tokens += NEW[100:103]  # the prefill computed the changed tokens
    s = splice(pool, dst, src, rc.runs[0], scratch=9)
    assert s.ops == [MoveRun(0, dst.seq_id, 9, 102, 103, 1000)] and s.moved == 1000 and s.rest is None
    assert dst.tokens == NEW[:1103]
    assert src.tokens[102:1102] == [HOLE] * 1000 and src.tokens[:102] == OLD[:102]
    ops = release_source(pool, src)
    assert ops == [Truncate(0, 102)] and not src.busy and src.tokens == OLD[:102]


def test_idle_sharers_are_cut_and_busy_ones_shrink_the_run():
    pool = _pool()
    pool.slots[2].tokens = OLD[:600]  # shares cells up to 600 with the source (a prefix copy)
    pool.slots[3].tokens = OLD[:50]  # shares only before the run
    rc = claim_with_runs(pool, NEW, 64, prefix_reuse=100)
    dst, src = rc.claim.slot, pool.slots[0]
    assert dst is pool.slots[1]
    dst.tokens += NEW[100:103]
    s = splice(pool, dst, src, rc.runs[0], scratch=9)
    assert Truncate(2, 102) in s.ops and pool.slots[2].tokens == OLD[:102]
    assert pool.slots[3].tokens == OLD[:50]
    assert s.moved == 1000

    pool = _pool()
    pool.slots[2].tokens = OLD[:600]
    pool.slots[2].busy = True
    rc = claim_with_runs(pool, NEW, 64, prefix_reuse=100)
    dst, src = rc.claim.slot, pool.slots[0]
    dst.tokens += NEW[100:103]
    s = splice(pool, dst, src, rc.runs[0], scratch=9)
    assert s.ops == [] and s.moved == 0
    assert (s.rest.src, s.rest.dst, s.rest.length) == (600, 601, 502)
    dst.tokens += NEW[103:601]
    s = splice(pool, dst, src, s.rest, scratch=9)
    assert s.ops == [MoveRun(0, dst.seq_id, 9, 600, 601, 502)] and dst.tokens == NEW[:1103]


def _scheduler(chunk_reuse_min: int) -> tuple[Scheduler, SlotPool]:
    pool = _pool(5)
    config = SchedulerConfig(
        parallel=4,
        max_queue=8,
        n_batch=512,
        prefill_chunk_while_decoding=128,
        chunk_reuse_min=chunk_reuse_min,
        scratch_seq=5,
    )
    return Scheduler(pool, config), pool


def _admit(sched: Scheduler, prompt: list[int]):
    seq = Sequence(EngineRequest(prompt=prompt, max_tokens=4), lambda e: None, 4)
    sched.add(seq)
    [(admitted, claim)] = sched.admit()
    return admitted, claim


def test_scheduler_prefix_only_when_shifting_is_off():
    """What the engine configures for a model whose KV cannot shift (SWA, recurrent, M-RoPE)."""
    sched, _ = _scheduler(0)
    seq, claim = _admit(sched, NEW)
    assert seq.runs == [] and seq.source is None and claim.reused == 100


def test_scheduler_moves_runs_as_the_prefill_reaches_them():
    sched, pool = _scheduler(64)
    seq, claim = _admit(sched, NEW)
    assert claim.reused == 1100 and seq.source is pool.slots[0] and len(seq.runs) == 1
    seq.cursor = len(seq.slot.tokens)
    assert seq.prompt_left == 3  # prefill stops where the run goes
    seq.slot.tokens += NEW[100:103]
    seq.cursor = 103
    [(spliced, result)] = sched.splice_ready()
    assert spliced is seq and result.moved == 1000 and seq.cursor == 1103
    assert isinstance(result.ops[0], MoveRun) and Truncate(0, 102) in result.ops  # source cut and unpinned
    assert seq.source is None and not pool.slots[0].busy and seq.prompt_left == len(NEW) - 1103


def test_runner_reads_the_capability_from_the_header_first(tmp_path):
    """A sliding-window model is refused before llama.cpp is asked anything (no weights needed)."""
    from gguf import GGUFWriter

    path = tmp_path / "swa.gguf"
    writer = GGUFWriter(str(path), "gemma2")
    writer.add_uint32("gemma2.attention.sliding_window", 4096)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    fake = SimpleNamespace(model=SimpleNamespace(path=path))
    assert "sliding-window" in ModelRunner.shift_blocker(fake)


def test_a_request_ended_mid_prefill_unpins_and_cuts_its_source():
    sched, pool = _scheduler(64)
    seq, _ = _admit(sched, NEW)
    seq.slot.tokens += NEW[100:103]
    seq.cursor = 103
    sched.splice_ready()  # the only run moved: the source is already unpinned
    assert seq.source is None
    sched2, pool2 = _scheduler(64)
    seq2, claim2 = _admit(sched2, NEW)
    ops = sched2.remove(seq2)  # cancelled before its run moved
    assert Truncate(claim2.slot.seq_id, 0) in ops and not pool2.slots[0].busy
    assert pool2.slots[0].tokens == OLD  # nothing moved yet: the source keeps everything
