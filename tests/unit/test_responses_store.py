"""Stored responses in the shared SQLite database: save, continue, delete, owners, budgets, retention."""

import base64
import os
import time

import pytest

from lmdock.api.responses.store import ResponseStore
from lmdock.core.errors import QuotaExceeded
from lmdock.core.owner import ANONYMOUS, Principal
from lmdock.storage import open_database

ALICE = Principal("alice")
BOB = Principal("bob")
ADMIN = Principal("root", admin=True)


def _response(rid: str, prev: str | None = None, text: str = "") -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    out = [
        {
            "type": "message",
            "id": f"msg_{rid}",
            "role": "assistant",
            "content": content,
            "status": "completed",
        }
    ]
    return {"id": rid, "model": "m", "previous_response_id": prev, "output": out}


def _user(uid: str, text: str = "", image: str | None = None) -> dict:
    content: list[dict] = [{"type": "input_text", "text": text}]
    if image is not None:
        content.append({"type": "input_image", "image_url": image, "detail": "auto"})
    return {"type": "message", "id": uid, "role": "user", "content": content}


def _continue(
    store: ResponseStore, rid: str, prev: str | None, item: dict, owner=None, text: str = ""
) -> None:
    """What the route does: read the previous conversation, then save the new response after it."""
    history = store.get(prev, Principal(owner), with_history=True).conversation() if prev else []
    store.save(_response(rid, prev, text), [item], history, owner)


def _ids(items: list[dict]) -> list[str]:
    return [i["id"] for i in items]


def test_save_get_conversation_and_delete(tmp_path):
    store = ResponseStore(open_database(tmp_path))
    user = _user("u1")
    store.save(_response("r1"), [user], [], None)
    got = store.get("r1", ANONYMOUS, with_history=True)
    assert got.input_items == [user] and _ids(got.conversation()) == ["u1", "msg_r1"]
    assert store.delete("r1", ANONYMOUS) and store.get("r1", ANONYMOUS) is None
    assert not store.delete("r1", ANONYMOUS)


def test_survives_reopening(tmp_path):
    ResponseStore(open_database(tmp_path)).save(_response("r1"), [], [], None)
    assert ResponseStore(open_database(tmp_path)).get("r1", ANONYMOUS).response["id"] == "r1"


def test_a_chain_costs_linear_storage_and_reads_back_whole(tmp_path):
    """Each turn stores its own items once: the 40th turn costs what the 1st did, not 40 times it."""
    store = ResponseStore(open_database(tmp_path))
    filler = "x" * 4000
    prev = None
    for turn in range(40):
        _continue(store, f"r{turn}", prev, _user(f"u{turn}", filler), text=filler)
        prev = f"r{turn}"
    sizes = [r["bytes"] for r in store.db.query("SELECT bytes FROM responses ORDER BY created_at")]
    assert max(sizes) < 2 * min(sizes)
    got = store.get("r39", ANONYMOUS, with_history=True)
    expected = [x for t in range(40) for x in (f"u{t}", f"msg_r{t}")]
    assert _ids(got.conversation()) == expected


def test_an_image_sent_again_and_again_is_stored_once(tmp_path):
    store = ResponseStore(open_database(tmp_path))
    image = "data:image/png;base64," + base64.b64encode(os.urandom(300_000)).decode()
    prev = None
    for turn in range(8):
        _continue(store, f"r{turn}", prev, _user(f"u{turn}", "what is this?", image))
        prev = f"r{turn}"
    assert store.used_bytes() < 1.5 * len(image)
    got = store.get("r7", ANONYMOUS, with_history=True)
    assert got.input_items[0]["content"][1]["image_url"] == image  # given back exactly as sent
    assert all(i["content"][1]["image_url"] == image for i in got.history if i["id"].startswith("u"))


def test_deleting_an_older_response_keeps_newer_ones_whole(tmp_path):
    store = ResponseStore(open_database(tmp_path))
    _continue(store, "r1", None, _user("u1"))
    _continue(store, "r2", "r1", _user("u2"))
    assert store.delete("r1", ANONYMOUS)
    assert store.get("r1", ANONYMOUS) is None  # gone for the client...
    assert _ids(store.get("r2", ANONYMOUS, with_history=True).conversation()) == [
        "u1",
        "msg_r1",
        "u2",
        "msg_r2",
    ]
    assert store.delete("r2", ANONYMOUS)  # ...and its row goes once nothing continues from it
    assert store.db.query_one("SELECT COUNT(*) AS n FROM responses")["n"] == 0


def test_a_response_whose_predecessor_vanished_meanwhile_keeps_its_own_history(tmp_path):
    store = ResponseStore(open_database(tmp_path))
    _continue(store, "r1", None, _user("u1"))
    history = store.get("r1", ANONYMOUS, with_history=True).conversation()
    store.delete("r1", ANONYMOUS)  # deleted while r2 was being generated
    store.save(_response("r2", "r1"), [_user("u2")], history, None)
    assert _ids(store.get("r2", ANONYMOUS, with_history=True).conversation()) == [
        "u1",
        "msg_r1",
        "u2",
        "msg_r2",
    ]


def test_a_response_belongs_to_the_key_that_stored_it(tmp_path):
    store = ResponseStore(open_database(tmp_path))
    store.save(_response("r1"), [_user("u1")], [], "alice")
    assert store.get("r1", ALICE) is not None
    assert store.get("r1", BOB) is None and store.get("r1", ANONYMOUS) is None
    assert not store.delete("r1", BOB)
    assert store.get("r1", ADMIN) is not None
    assert store.delete("r1", ADMIN)


def test_the_byte_quota_refuses_before_any_work(tmp_path):
    store = ResponseStore(open_database(tmp_path), max_bytes=100_000)
    with pytest.raises(QuotaExceeded) as alone:
        store.check_room(200_000)
    assert alone.value.status == 413 and "--responses-max-mib" in alone.value.message
    store.check_room(50_000)
    store.save(_response("r1", text="y" * 90_000), [], [], None)
    with pytest.raises(QuotaExceeded) as full:
        store.check_room(20_000)
    assert full.value.status == 429 and "delete some" in full.value.message
    store.delete("r1", ANONYMOUS)
    store.check_room(20_000)  # room again


def test_retention_by_count_and_age(tmp_path):
    store = ResponseStore(open_database(tmp_path), max_count=2)
    for rid in ("a", "b", "c"):
        store.save(_response(rid), [], [], None)
        time.sleep(0.01)
    assert store.get("a", ANONYMOUS) is None and store.get("b", ANONYMOUS) and store.get("c", ANONYMOUS)
    aged = ResponseStore(store.db, max_count=0, max_age_s=0.05)
    time.sleep(0.1)
    assert aged.get("c", ANONYMOUS) is None  # expired even before the next save prunes it
    aged.save(_response("d"), [], [], None)
    assert store.db.query_one("SELECT COUNT(*) AS n FROM responses")["n"] == 1
