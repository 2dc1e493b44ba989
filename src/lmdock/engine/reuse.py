"""Chunk reuse after the first difference: which cached runs of tokens a new prompt can take over.

A prompt that diverges from a cached sequence early (Claude Code names the project folder half-way
through its system prompt, before ~9k tokens of tool definitions) loses everything after the divergence
under longest-common-prefix caching. Most of those later tokens still sit in the cache, only at other
positions. `plan_reuse` finds them: token lists in, a plan out (the common prefix, then runs of cached
tokens and the prompt positions they move to). Applying the plan (moving KV cells, the K-shift) is the
engine's job; this module does no llama.cpp calls, so it is unit-tested on plain lists.

Unlike llama-server's `--cache-reuse` (which only skips *deletions* from the cached prompt: it never
advances in the new prompt on a mismatch), this also skips insertions and substitutions in the new
prompt, such as a longer or different path.

Holes: a cached position whose KV is gone (moved away by an earlier reuse) holds `HOLE`, which matches
no prompt token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

HOLE = -1
_ANCHOR = 8  # tokens hashed to find match candidates; runs shorter than the anchor cannot be found
_MAX_CANDIDATES = 16  # candidate positions tried per anchor (bounds the work on repetitive text)

# (prompt position, first cached position allowed) -> the cached positions where a run may start
Candidates = Callable[[int, int], Iterable[int]]


@dataclass(frozen=True)
class Run:
    """`length` cached tokens at `src` (positions in the cached sequence) reused at `dst` in the prompt."""

    src: int
    dst: int
    length: int

    @property
    def shift(self) -> int:
        return self.dst - self.src


@dataclass
class ReusePlan:
    """Reuse the first `prefix` tokens in place, then each run moved to its prompt position.

    Runs are ordered and disjoint in both sequences (`src` and `dst` increase), all at or after `prefix`
    and before the prompt's last token (which is always computed, so that logits exist)."""

    prefix: int
    runs: list[Run] = field(default_factory=list)

    @property
    def reused(self) -> int:
        return self.prefix + sum(r.length for r in self.runs)

    @property
    def moved(self) -> int:
        return sum(r.length for r in self.runs)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    step = 256  # compare in chunks first: prompts share long prefixes, Python-level loops are slow
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _match_len(cached: Sequence[int], src: int, prompt: Sequence[int], dst: int, limit: int) -> int:
    """How many tokens match from cached[src] and prompt[dst] on, at most `limit`."""
    n = 0
    step = 64
    while n + step <= limit and cached[src + n : src + n + step] == prompt[dst + n : dst + n + step]:
        n += step
    while n < limit and cached[src + n] == prompt[dst + n]:
        n += 1
    return n


def run_anchors(cached: Sequence[int], min_run: int) -> frozenset[int] | None:
    """Hashes of `cached`'s anchor windows sampled every `min_run - anchor + 1` tokens, or None when
    `min_run` is shorter than an anchor. Every run of at least `min_run` tokens contains a sampled
    window, so a prompt none of whose `window_hashes` is here can take no run from `cached`: a test of a
    few set lookups before `plan_reuse`, which indexes the whole sequence."""
    if min_run < _ANCHOR:
        return None
    stride = min_run - _ANCHOR + 1
    return frozenset(
        hash(tuple(cached[i : i + _ANCHOR])) for i in range(0, len(cached) - _ANCHOR + 1, stride)
    )


def window_hashes(prompt: Sequence[int]) -> frozenset[int]:
    """Hashes of every anchor window of `prompt` (what `run_anchors` are looked up in)."""
    return frozenset(hash(tuple(prompt[i : i + _ANCHOR])) for i in range(len(prompt) - _ANCHOR + 1))


def _index(cached: Sequence[int], start: int) -> dict[tuple[int, ...], list[int]]:
    """Positions of every anchor-length window of `cached` from `start` on (windows with holes skipped)."""
    index: dict[tuple[int, ...], list[int]] = {}
    for i in range(start, len(cached) - _ANCHOR + 1):
        key = tuple(cached[i : i + _ANCHOR])
        if HOLE in key:
            continue
        positions = index.setdefault(key, [])
        if len(positions) < 4 * _MAX_CANDIDATES:
            positions.append(i)
    return index


def plan_reuse(
    cached: Sequence[int], prompt: Sequence[int], min_run: int, *, allow_runs: bool = True
) -> ReusePlan:
    """The cached tokens `prompt` can reuse: the common prefix, then (if `allow_runs`) every later run of
    at least `min_run` tokens found in `cached` after the prefix, greedily in prompt order.

    The prompt's last token is never reused. With `allow_runs=False` (a model whose KV cannot be
    shifted) the plan is prefix-only."""
    limit = len(prompt) - 1  # the last prompt token is always evaluated
    prefix = min(common_prefix_len(cached, prompt), max(limit, 0))
    plan = ReusePlan(prefix=prefix)
    if not allow_runs or min_run <= 0 or limit - prefix < min_run or len(cached) - prefix < min_run:
        return plan
    if min_run < _ANCHOR:  # a tiny min_run: try every cached position holding the prompt's token
        candidates = _every_position(cached, prompt, min_run)
    else:
        candidates = _indexed(cached, prompt, prefix)
    return _greedy(cached, prompt, min_run, plan, limit, candidates)


def _greedy(
    cached: Sequence[int],
    prompt: Sequence[int],
    min_run: int,
    plan: ReusePlan,
    limit: int,
    candidates: Candidates,
) -> ReusePlan:
    """Walk the prompt after the prefix: at each position take the longest match among the candidates
    if it reaches `min_run` (and go on after it), else move one token on. Runs keep cached order, so
    each one starts after the previous one."""
    src_floor = dst = plan.prefix
    while dst + min_run <= limit:
        best_len, best_src = 0, -1
        for src in candidates(dst, src_floor):
            n = _match_len(cached, src, prompt, dst, min(len(cached) - src, limit - dst))
            if n > best_len:
                best_len, best_src = n, src
        if best_len >= min_run:
            plan.runs.append(Run(src=best_src, dst=dst, length=best_len))
            dst += best_len
            src_floor = best_src + best_len
        else:
            dst += 1
    return plan


def _indexed(cached: Sequence[int], prompt: Sequence[int], start: int) -> Candidates:
    """Cached positions whose anchor-length window equals the prompt's, at most `_MAX_CANDIDATES`."""
    index = _index(cached, start)

    def candidates(dst: int, src_floor: int) -> Iterable[int]:
        found = index.get(tuple(prompt[dst : dst + _ANCHOR]))
        if found is None:
            return ()  # the common case on unrelated text: no generator to build
        return islice((src for src in found if src >= src_floor), _MAX_CANDIDATES)

    return candidates


def _every_position(cached: Sequence[int], prompt: Sequence[int], min_run: int) -> Candidates:
    """Every cached position holding the prompt's token, without an index (a min_run below the anchor
    length: tests, tiny prompts)."""

    def candidates(dst: int, src_floor: int) -> Iterable[int]:
        token = prompt[dst]
        return (src for src in range(src_floor, len(cached) - min_run + 1) if cached[src] == token)

    return candidates


def shift_blocker(kv: dict[str, object], array_keys: Iterable[str] = ()) -> str | None:
    """Why a model's KV cells cannot be moved to other positions, from its GGUF header (None: they can).

    Moving a cached run is a RoPE rotation of its keys (llama.cpp's K-shift), valid only for plain RoPE
    attention over every cached token: not for sliding-window layers (cells outside the window are gone),
    recurrent or hybrid state (no per-token cells at all), multi-section RoPE (M-RoPE: llama.cpp refuses
    to shift it) or models without RoPE. The engine also asks llama.cpp (`llama_memory_can_shift`,
    `llama_model_n_swa`, `llama_model_is_recurrent`/`_is_hybrid`), since a header cannot say everything."""
    arch = str(kv.get("general.architecture") or "")
    keys = set(kv) | set(array_keys)
    if not arch:
        return "unknown architecture"
    if arch.startswith(("mamba", "rwkv")) or any(
        k.startswith((f"{arch}.ssm.", f"{arch}.wkv.")) for k in keys
    ):
        return f"{arch} keeps recurrent state"
    if kv.get(f"{arch}.attention.sliding_window") or f"{arch}.attention.sliding_window_pattern" in keys:
        return f"{arch} uses sliding-window attention"
    if f"{arch}.rope.dimension_sections" in keys:
        return f"{arch} uses multi-section RoPE"
    return None
