"""The memory limit of the process's cgroup, from the text of the files that say it.

Owns the parsing: ``/proc/self/cgroup`` (which cgroup the process is in, v1 or
v2), ``/proc/self/mountinfo`` (where that hierarchy is mounted, and which part of
it a container sees), and the limit files (v2 ``memory.max``, v1
``memory.limit_in_bytes``). The effective limit is the smallest one set on the
process's cgroup and its ancestors up to the mount point: a parent's limit binds
its children. Every function takes file contents, never a path to open;
``proxy.machine`` reads the files. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with
# 4 KiB pages, other values with other page sizes); v2 writes "max". Any value
# this large is no limit, whatever the page size.
UNLIMITED_FROM = 2**62

V2_LIMIT_FILE = "memory.max"
V1_LIMIT_FILE = "memory.limit_in_bytes"


@dataclass(frozen=True, slots=True)
class Membership:
    """Where ``/proc/self/cgroup`` puts the process: its v2 path (the ``0::`` line)
    and its path in a v1 hierarchy that has the memory controller."""

    v2: str | None
    v1_memory: str | None


@dataclass(frozen=True, slots=True)
class Mount:
    """A cgroup hierarchy in ``/proc/self/mountinfo``: the cgroup seen at
    ``mount_point`` (``root``: ``/`` unless a container sees a subtree)."""

    version: Literal[1, 2]
    root: str
    mount_point: str


@dataclass(frozen=True, slots=True)
class LimitFiles:
    """The limit files to read, the process's own cgroup first, then each ancestor
    up to the mount point."""

    version: Literal[1, 2]
    paths: tuple[str, ...]


def parse_membership(text: str) -> Membership:
    """``/proc/self/cgroup``: ``hierarchy-ID:controller-list:cgroup-path`` lines."""
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return Membership(v2=v2, v1_memory=v1)


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> tuple[Mount | None, Mount | None]:
    """``/proc/self/mountinfo``: the cgroup2 mount and the v1 mount carrying the
    memory controller (the first of each), or None."""
    v2: Mount | None = None
    v1: Mount | None = None
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 3:
            continue
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = fields[dash + 1], fields[dash + 3] if len(fields) > dash + 3 else ""
        if fstype == "cgroup2" and v2 is None:
            v2 = Mount(2, root, mount_point)
        elif fstype == "cgroup" and "memory" in options.split(",") and v1 is None:
            v1 = Mount(1, root, mount_point)
    return v2, v1


def _directory(mount: Mount, cgroup_path: str) -> str:
    """The directory of ``cgroup_path`` under ``mount``. A container sees its own
    cgroup as the root of the mount (``root`` is that cgroup, or ``/`` with a
    cgroup namespace); a path outside what the mount shows falls back to the mount
    point, which is then the closest directory there is."""
    root = mount.root.rstrip("/")
    path = posixpath.normpath(cgroup_path) if cgroup_path else "/"
    if root and path != root and not path.startswith(root + "/"):
        return mount.mount_point
    relative = path[len(root) :].lstrip("/")
    return posixpath.join(mount.mount_point, relative) if relative else mount.mount_point


def _up_to(directory: str, top: str) -> tuple[str, ...]:
    found = [directory]
    while directory != top and directory not in ("/", ""):
        directory = posixpath.dirname(directory)
        found.append(directory)
    return tuple(found)


def limit_files(membership: Membership, v2: Mount | None, v1: Mount | None) -> LimitFiles | None:
    """The files that hold the process's memory limit, or None if no hierarchy
    with a memory controller is there. On a hybrid system (v1 and v2 both mounted)
    the memory controller is v1's when a v1 hierarchy has it."""
    if v1 is not None and membership.v1_memory is not None:
        mount, path, name = v1, membership.v1_memory, V1_LIMIT_FILE
    elif v2 is not None and membership.v2 is not None:
        mount, path, name = v2, membership.v2, V2_LIMIT_FILE
    else:
        return None
    directories = _up_to(_directory(mount, path), mount.mount_point)
    return LimitFiles(mount.version, tuple(posixpath.join(d, name) for d in directories))


def parse_limit(text: str) -> int | None:
    """The bytes a limit file allows, or None for no limit (``max``, a huge value,
    or text that is not a number)."""
    value = text.strip()
    if value == "max" or not value.isdigit():
        return None
    limit = int(value)
    return limit if limit < UNLIMITED_FROM else None


def effective_limit(texts: Iterable[str | None], physical: int | None) -> int | None:
    """The smallest limit among the files' texts (None: a file that could not be
    read). A limit at or above the machine's physical memory is none: it never
    binds before the machine runs out."""
    limits = [v for v in (parse_limit(t) for t in texts if t is not None) if v is not None]
    if not limits:
        return None
    limit = min(limits)
    if physical is not None and limit >= physical:
        return None
    return limit
