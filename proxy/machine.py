"""What the machine says about memory: the cgroup limit, physical memory, RSS.

The thin I/O layer over ``proxy.cgroup``: it reads ``/proc`` and the cgroup
files and hands their text to the pure parsers. Anything that cannot be read
(another OS, a file that is not there, no permission) is "unknown" (None),
never an error: sidecache then runs as if there were no limit. Must not import
aiohttp.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from proxy.cgroup import effective_limit, limit_files, parse_membership, parse_mounts
from proxy.memfit import Machine

log = logging.getLogger(__name__)

PROC = Path("/proc")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def physical_memory() -> int | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def cgroup_limit(proc: Path = PROC, physical: int | None = None) -> int | None:
    """The memory limit of this process's cgroup, or None."""
    membership, mounts = _read(proc / "self" / "cgroup"), _read(proc / "self" / "mountinfo")
    if membership is None or mounts is None:
        return None
    files = limit_files(parse_membership(membership), *parse_mounts(mounts))
    if files is None:
        return None
    limit = effective_limit((_read(p) for p in files.paths), physical)
    log.debug("cgroup v%d memory limit: %s (from %s)", files.version, limit, files.paths[0])
    return limit


def read_machine(proc: Path = PROC) -> Machine:
    physical = physical_memory()
    return Machine(cgroup_limit=cgroup_limit(proc, physical), physical=physical)


def rss_bytes(proc: Path = PROC) -> int | None:
    """This process's resident set size (``/proc/self/statm``), or None."""
    text = _read(proc / "self" / "statm")
    if text is None:
        return None
    fields = text.split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
