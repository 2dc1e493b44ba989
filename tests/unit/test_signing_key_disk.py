"""The key that signs thinking blocks: created 0600 once; a full disk degrades to a per-process key."""

from __future__ import annotations

from lmdock.api.anthropic import signature
from tests.small_disk import fill, small_disk


def test_a_full_disk_signs_with_a_key_of_this_process(tmp_path, monkeypatch):
    with small_disk(tmp_path / "disk", 1) as disk:
        monkeypatch.setenv("LMDOCK_HOME", str(disk))
        monkeypatch.delenv("LMDOCK_SIGNING_KEY", raising=False)
        signature._server_key.cache_clear()
        try:
            fill(disk)
            first = signature.sign_thinking("hmm")  # no exception on a full disk
            assert signature.verify_thinking("hmm", first)  # and consistent within the process
            assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]  # no key, no temporary file
        finally:
            signature._server_key.cache_clear()
