"""The CPU self-check's verdict file: remembering it is an optimisation that a full disk must not break."""

from __future__ import annotations

import json

from lmdock.engine.cpu_check import _read, _write
from tests.small_disk import fill, small_disk


def test_a_full_disk_only_means_the_verdict_is_not_remembered(tmp_path):
    with small_disk(tmp_path / "disk", 1) as disk:
        path = disk / "cpu-check.json"
        _write(path, "a", {"repack": True})
        filler = fill(disk)
        _write(path, "b", {"repack": False, "reason": "x" * 20_000})  # no exception, no temporary file left
        assert sorted(p.name for p in disk.iterdir()) == ["cpu-check.json", "filler.bin"]
        assert _read(path) == {"a": {"repack": True}}
        filler.unlink()
        _write(path, "b", {"repack": False})
        assert json.loads(path.read_text())["b"] == {"repack": False}
