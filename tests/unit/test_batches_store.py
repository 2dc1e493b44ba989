"""Message Batches storage: durable state, atomic results, cancel / expiry / retention, pagination."""

from __future__ import annotations

import json
import sqlite3

import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from lmdock.api.anthropic.batches.schema import validate_create
from lmdock.api.anthropic.batches.store import EXPIRY_SECONDS, BatchNotFound, BatchStore, batch_object
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InvalidRequest, ModelNotFound
from lmdock.core.owner import ANONYMOUS as ANYONE
from lmdock.storage import Database
from lmdock.storage.db import MIGRATIONS


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _params(text: str = "hi", **extra) -> dict:
    return {"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": text}], **extra}


def _resolve(name: str) -> str:
    if name == "missing":
        raise ModelNotFound(f"model '{name}' not found")
    return name


@pytest.fixture
def store(tmp_path) -> BatchStore:
    return BatchStore(Database(tmp_path / "lmdock.db"), clock=Clock())


def _create(store: BatchStore, requests: list[dict]) -> str:
    return store.create(validate_create({"requests": requests}, _resolve, RequestLimits()))


def _ok(store: BatchStore, row, idx: int) -> bool:
    message = {
        "id": f"msg_{idx}",
        "type": "message",
        "role": "assistant",
        "model": "default",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    return store.commit(row["n"], idx, "succeeded", {"type": "succeeded", "message": message})


def _strict(obj: dict, model):
    """Validate a wire object the way the SDK does with _strict_response_validation=True."""
    return model.model_validate(obj, strict=False)


def test_database_is_wal_and_migrations_are_recorded_once(tmp_path):
    db = Database(tmp_path / "x.db")
    assert db.query_one("PRAGMA journal_mode")[0] == "wal"
    Database(tmp_path / "x.db")  # a second open applies nothing twice
    rows = db.query("SELECT feature, version FROM schema_migrations ORDER BY feature, version")
    assert [(r["feature"], r["version"]) for r in rows] == [
        (feature, v) for feature, steps in sorted(MIGRATIONS.items()) for v in range(1, len(steps) + 1)
    ]


def test_create_validates_each_request_and_stores_errors(store):
    batch_id = _create(
        store,
        [
            {"custom_id": "good", "params": _params()},
            {
                "custom_id": "no-max",
                "params": {"model": "default", "messages": [{"role": "user", "content": "x"}]},
            },
            {"custom_id": "stream", "params": _params(stream=True)},
            {"custom_id": "unknown-model", "params": _params(model="missing")},
            {"custom_id": "bad-choice", "params": _params(tool_choice={"type": "any"})},
        ],
    )
    row = store.get(batch_id, ANYONE)
    assert batch_id.startswith("msgbatch_")
    assert row["status"] == "in_progress" and row["total"] == 5 and row["n_errored"] == 4
    states = {
        r["custom_id"]: (r["state"], json.loads(r["result"]) if r["result"] else None)
        for r in store.db.query("SELECT * FROM message_batch_requests")
    }
    assert states["good"] == ("pending", None)
    assert states["no-max"][1]["error"]["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    assert "stream" in states["stream"][1]["error"]["error"]["message"]
    assert states["unknown-model"][1]["error"]["error"]["type"] == "not_found_error"
    assert states["bad-choice"][1]["error"]["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "requests: Field required"),
        ({"requests": []}, "requests: a batch needs at least one request"),
        ({"requests": [{"params": _params()}]}, "requests.0.custom_id: Field required"),
        (
            {"requests": [{"custom_id": "a b", "params": _params()}]},
            "requests.0.custom_id: String should match",
        ),
        ({"requests": [{"custom_id": "x" * 65, "params": _params()}]}, "requests.0.custom_id: String should"),
        ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
        (
            {"requests": [{"custom_id": "a", "params": _params()}, {"custom_id": "a", "params": _params()}]},
            "requests.1.custom_id: duplicate custom_id 'a'",
        ),
    ],
)
def test_a_malformed_batch_is_rejected_whole(body, message):
    with pytest.raises(InvalidRequest) as err:
        validate_create(body, _resolve, RequestLimits())
    assert err.value.message.startswith(message)


def test_results_commit_once_and_the_last_one_ends_the_batch(store):
    batch_id = _create(store, [{"custom_id": f"r{i}", "params": _params()} for i in range(3)])
    row = store.get(batch_id, ANYONE)
    assert _ok(store, row, 0)
    assert not _ok(store, row, 0)  # a second result for the same request is refused
    assert store.get(batch_id, ANYONE)["n_succeeded"] == 1
    wire = batch_object(store.get(batch_id, ANYONE), "http://h:1/")
    # documented: everything counts as processing until the batch ends; no results_url yet
    assert wire["request_counts"] == {
        "processing": 3,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert wire["results_url"] is None and wire["ended_at"] is None
    _ok(store, row, 1)
    store.commit(
        row["n"],
        2,
        "errored",
        {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "x"}}},
    )
    ended = store.get(batch_id, ANYONE)
    assert ended["status"] == "ended" and ended["ended_at"] == store.clock.now
    wire = _strict(batch_object(ended, "http://h:1/"), MessageBatch)
    assert wire.request_counts.succeeded == 2 and wire.request_counts.errored == 1
    assert wire.request_counts.processing == 0
    assert wire.results_url == f"http://h:1/v1/messages/batches/{batch_id}/results"
    assert wire.expires_at.timestamp() == wire.created_at.timestamp() + EXPIRY_SECONDS
    lines = list(store.result_lines(ended, chunk=2))
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    parsed = [_strict(json.loads(line), MessageBatchIndividualResponse) for line in lines]
    assert [p.custom_id for p in parsed] == ["r0", "r1", "r2"]
    assert [p.result.type for p in parsed] == ["succeeded", "succeeded", "errored"]


def test_a_batch_of_only_invalid_requests_ends_at_once(store):
    batch_id = _create(store, [{"custom_id": "a", "params": {"model": "default"}}])
    assert store.get(batch_id, ANYONE)["status"] == "ended"


def test_cancel_keeps_finished_results_and_spares_in_flight_requests(store):
    batch_id = _create(store, [{"custom_id": f"r{i}", "params": _params()} for i in range(4)])
    row = store.get(batch_id, ANYONE)
    _ok(store, row, 0)
    assert store.cancel(batch_id, ANYONE)["status"] == "canceling"
    stopping = store.sweep(in_flight={(row["n"], 1)}, retention_seconds=None)
    assert stopping == {row["n"]: "canceled"}
    assert store.get(batch_id, ANYONE)["status"] == "canceling"  # request 1 is still running
    assert store.pending(10) == []  # a canceling batch hands out no more work
    _ok(store, row, 1)  # the in-flight request finished before it could be interrupted
    ended = store.get(batch_id, ANYONE)
    assert ended["status"] == "ended"
    assert (ended["n_succeeded"], ended["n_canceled"]) == (2, 2)
    assert ended["cancel_initiated_at"] is not None


def test_overdue_batches_expire(store):
    batch_id = _create(store, [{"custom_id": f"r{i}", "params": _params()} for i in range(2)])
    _ok(store, store.get(batch_id, ANYONE), 0)
    store.clock.now += EXPIRY_SECONDS + 1
    store.sweep(in_flight=set(), retention_seconds=None)
    row = store.get(batch_id, ANYONE)
    assert row["status"] == "ended" and (row["n_succeeded"], row["n_expired"]) == (1, 1)
    results = [json.loads(line)["result"] for line in store.result_lines(row)]
    assert results[1] == {"type": "expired"}


def test_retention_archives_results(store):
    batch_id = _create(store, [{"custom_id": "a", "params": _params()}])
    _ok(store, store.get(batch_id, ANYONE), 0)
    store.clock.now += 10 * 86400
    store.sweep(in_flight=set(), retention_seconds=29 * 86400)
    assert store.get(batch_id, ANYONE)["archived_at"] is None
    store.clock.now += 20 * 86400
    store.sweep(in_flight=set(), retention_seconds=29 * 86400)
    row = store.get(batch_id, ANYONE)
    assert row["archived_at"] is not None
    assert batch_object(row, "http://h/")["results_url"] is None
    assert store.db.query_one("SELECT params, result FROM message_batch_requests")[:] == (None, None)


def test_delete_only_when_ended(store):
    batch_id = _create(store, [{"custom_id": "a", "params": _params()}])
    with pytest.raises(InvalidRequest):
        store.delete(batch_id, ANYONE)
    _ok(store, store.get(batch_id, ANYONE), 0)
    store.delete(batch_id, ANYONE)
    with pytest.raises(BatchNotFound):
        store.get(batch_id, ANYONE)
    assert store.db.query("SELECT * FROM message_batch_requests") == []


def test_pages_newest_first_with_both_cursors(store):
    ids = [_create(store, [{"custom_id": "a", "params": _params()}]) for _ in range(5)]
    newest_first = list(reversed(ids))
    rows, more = store.page(ANYONE, limit=2, after_id=None, before_id=None)
    assert [r["id"] for r in rows] == newest_first[:2] and more
    rows, more = store.page(ANYONE, limit=2, after_id=newest_first[1], before_id=None)
    assert [r["id"] for r in rows] == newest_first[2:4] and more
    rows, more = store.page(ANYONE, limit=2, after_id=newest_first[3], before_id=None)
    assert [r["id"] for r in rows] == newest_first[4:] and not more
    rows, more = store.page(ANYONE, limit=2, after_id=None, before_id=newest_first[4])
    assert [r["id"] for r in rows] == newest_first[2:4] and more
    rows, more = store.page(ANYONE, limit=5, after_id=None, before_id=newest_first[2])
    assert [r["id"] for r in rows] == newest_first[:2] and not more
    with pytest.raises(InvalidRequest):
        store.page(ANYONE, limit=0, after_id=None, before_id=None)


def test_pending_work_groups_requests_by_prompt_prefix(store):
    a = {"system": "You label fruit."}
    b = {"system": "You label cars."}
    requests = [
        {"custom_id": "a1", "params": _params(**a)},
        {"custom_id": "b1", "params": _params(**b)},
        {"custom_id": "a2", "params": _params(**a)},
        {"custom_id": "b2", "params": _params(**b)},
        {"custom_id": "a3", "params": _params(**a)},
    ]
    _create(store, requests)
    order = [p.custom_id[0] for p in store.pending(10)]
    assert order in (list("aaabb"), list("bbaaa"))  # each prefix group runs together
    b1 = next(p for p in store.pending(10) if p.custom_id == "b1")
    preferred = [p.custom_id for p in store.pending(10, prefer=(b1.batch_n, b1.prefix_key))]
    assert preferred == ["b1", "b2", "a1", "a2", "a3"]  # the group being worked on goes on first


def test_attempts_are_counted_durably(store):
    batch_id = _create(store, [{"custom_id": "a", "params": _params()}])
    n = store.get(batch_id, ANYONE)["n"]
    assert store.start_attempt(n, 0) == 1
    assert store.start_attempt(n, 0) == 2


def test_a_committed_result_survives_a_reopen(tmp_path):
    path = tmp_path / "lmdock.db"
    store = BatchStore(Database(path), clock=Clock())
    batch_id = _create(
        store, [{"custom_id": "a", "params": _params()}, {"custom_id": "b", "params": _params()}]
    )
    _ok(store, store.get(batch_id, ANYONE), 0)
    raw = sqlite3.connect(path)  # another connection, as after a restart
    assert raw.execute("SELECT state FROM message_batch_requests ORDER BY idx").fetchall() == [
        ("succeeded",),
        ("pending",),
    ]


def test_a_batch_belongs_to_the_key_that_created_it(store):
    from lmdock.core.owner import Principal

    alice, bob, admin = Principal("alice"), Principal("bob"), Principal("root", admin=True)
    mine = store.create(
        validate_create({"requests": [{"custom_id": "a", "params": _params()}]}, _resolve, RequestLimits()),
        "alice",
    )
    theirs = store.create(
        validate_create({"requests": [{"custom_id": "b", "params": _params()}]}, _resolve, RequestLimits()),
        "bob",
    )
    assert store.get(mine, alice)["id"] == mine
    for call in (store.get, store.cancel, store.delete):
        with pytest.raises(BatchNotFound):
            call(mine, bob)  # another key's batch does not exist for it
    assert [r["id"] for r in store.page(alice, limit=10, after_id=None, before_id=None)[0]] == [mine]
    assert [r["id"] for r in store.page(bob, limit=10, after_id=None, before_id=None)[0]] == [theirs]
    with pytest.raises(BatchNotFound):
        store.page(bob, limit=10, after_id=mine, before_id=None)  # not even as a cursor
    assert {r["id"] for r in store.page(admin, limit=10, after_id=None, before_id=None)[0]} == {mine, theirs}
    assert store.cancel(mine, admin)["status"] == "canceling"


def test_the_byte_quota_refuses_a_batch_with_the_reason(tmp_path):
    from lmdock.core.errors import QuotaExceeded

    store = BatchStore(Database(tmp_path / "lmdock.db"), clock=Clock(), max_bytes=20_000)
    big = [{"custom_id": f"q{i}", "params": _params("x" * 4000)} for i in range(8)]
    with pytest.raises(QuotaExceeded) as alone:
        _create(store, big)
    assert alone.value.status == 413 and "--batches-max-mib" in alone.value.message
    first = _create(store, big[:3])
    with pytest.raises(QuotaExceeded) as full:
        _create(store, big[:3])
    assert full.value.status == 429 and "delete ended batches" in full.value.message
    row = store.get(first, ANYONE)
    for idx in range(3):
        _ok(store, row, idx)
    store.delete(first, ANYONE)
    _create(store, big[:3])  # the space it held is free again
