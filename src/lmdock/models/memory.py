"""How much memory a model load may use on this machine, probed when it is asked (not at start-up: other
programs come and go).

Linux: `MemAvailable` (what the kernel says can be allocated without swapping), lowered to the room left
under this process's cgroup limit (a container's `memory.max`, or v1's `memory.limit_in_bytes`), counting
the group's reclaimable page cache as free. Elsewhere: the free physical pages `sysconf` reports, or None when even that is unknown.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmdock.core.config import Settings
from lmdock.models.estimate import MARGIN_BYTES, MemoryBudget

_PROC = Path("/proc")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _meminfo_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_V2 = ("memory.max", "memory.current", "inactive_file")
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def _room_in(group: Path, names: tuple[str, str, str]) -> int | None:
    limit_file, usage_file, inactive = names
    limit = (group / limit_file).read_text().strip()
    if limit == "max" or int(limit) >= 1 << 60:  # v1 writes "no limit" as a huge number
        return None
    usage = int((group / usage_file).read_text())
    stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
    return max(0, int(limit) - usage + int(stat.get(inactive, 0)))


def _cgroup_room(proc: Path, root: Path) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), or None without a limit."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if hierarchy == "0" and not controllers:
            base, names = root, _V2
        elif "memory" in controllers.split(","):
            base, names = root / "memory", _V1
        else:
            continue
        # the group's own folder, or the root when a container shows its group there
        for group in (base / rel.strip().lstrip("/"), base):
            try:
                return _room_in(group, names)
            except (OSError, ValueError):
                continue
    return None


def available_bytes(proc: Path = _PROC, cgroup_root: Path = _CGROUP_ROOT) -> int | None:
    """Memory a new worker process can use now without swapping, or None if the system does not say."""
    found = _meminfo_available(proc)
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room(proc, cgroup_root)
    return found if room is None else min(found, room)


def budget_for(settings: Settings) -> MemoryBudget:
    """What the next load may use: `--memory-budget` if set, else what is available now less a margin
    for the rest of the machine; the RAM prompt-cache budget is kept free when lmdock picks a context."""
    reserve = settings.cache_ram << 20
    if settings.memory_budget > 0:
        return MemoryBudget(settings.memory_budget << 20, reserve)
    found = available_bytes()
    return MemoryBudget(None if found is None else max(0, found - MARGIN_BYTES), reserve)
