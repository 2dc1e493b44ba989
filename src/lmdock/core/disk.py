"""Free disk space, and the headroom that writers of large files (prompt-cache saves, model downloads)
leave for everything else: on a shared disk, a cache or a download must not take the last bytes the
database needs to commit a batch result or a stored response."""

from __future__ import annotations

import shutil
from pathlib import Path

HEADROOM_FRACTION = 0.10  # leave this share of the filesystem free...
HEADROOM_MAX = 256 << 20  # ...but never ask for more than this


def headroom(total: int) -> int:
    return min(HEADROOM_MAX, int(total * HEADROOM_FRACTION))


def free_space(path: Path) -> tuple[int, int]:
    """Bytes free (to this user) and the size of the filesystem holding `path`."""
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


def shortfall(path: Path, size: int) -> tuple[int, int, int]:
    """How many bytes writing `size` more under `path` lacks to leave the headroom free (0: it fits),
    with the bytes free and the headroom."""
    free, total = free_space(path)
    keep = headroom(total)
    return max(0, size + keep - free), free, keep
