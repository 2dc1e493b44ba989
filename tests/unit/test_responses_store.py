"""Stored responses in the shared SQLite database: save, continue, delete, bounded retention."""

import time

from lmdock.api.responses.store import ResponseStore
from lmdock.storage import open_database


def _response(rid: str, prev: str | None = None) -> dict:
    out = [{"type": "message", "id": f"msg_{rid}", "role": "assistant", "content": [], "status": "completed"}]
    return {"id": rid, "model": "m", "previous_response_id": prev, "output": out}


def test_save_get_conversation_and_delete(tmp_path):
    store = ResponseStore(open_database(tmp_path))
    user = {"type": "message", "id": "u1", "role": "user", "content": [], "status": "completed"}
    store.save(_response("r1"), [user], [])
    got = store.get("r1")
    assert got.input_items == [user] and [i["id"] for i in got.conversation()] == ["u1", "msg_r1"]
    assert store.delete("r1") and store.get("r1") is None and not store.delete("r1")


def test_survives_reopening(tmp_path):
    ResponseStore(open_database(tmp_path)).save(_response("r1"), [], [])
    assert ResponseStore(open_database(tmp_path)).get("r1").response["id"] == "r1"


def test_retention_by_count_and_age(tmp_path):
    store = ResponseStore(open_database(tmp_path), max_count=2)
    for rid in ("a", "b", "c"):
        store.save(_response(rid), [], [])
        time.sleep(0.01)
    assert store.get("a") is None and store.get("b") and store.get("c")
    aged = ResponseStore(store.db, max_count=0, max_age_s=0.05)
    time.sleep(0.1)
    assert aged.get("c") is None  # expired even before the next save prunes it
    aged.save(_response("d"), [], [])
    assert store.db.query_one("SELECT COUNT(*) AS n FROM responses")["n"] == 1
