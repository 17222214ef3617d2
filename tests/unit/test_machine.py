"""The thin I/O layer over proxy/cgroup.py (proxy/machine.py), on a /proc and a
cgroup tree written into a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

from proxy.machine import cgroup_limit, rss_bytes

GIB = 1024**3


def fake_host(tmp_path: Path, limits: dict[str, str]) -> Path:
    """A /proc whose process is in the v2 cgroup /pods/p1/c1, mounted at tmp/cg,
    with the given limit files (relative path -> content)."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/pods/p1/c1\n")
    mount = tmp_path / "cg"
    (proc / "self" / "mountinfo").write_text(
        f"26 22 0:23 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    (mount / "pods" / "p1" / "c1").mkdir(parents=True)
    for relative, text in limits.items():
        (mount / relative).write_text(text)
    return proc


def test_the_smallest_limit_up_the_tree_is_read(tmp_path: Path) -> None:
    proc = fake_host(
        tmp_path,
        {
            "pods/p1/c1/memory.max": "max\n",
            "pods/p1/memory.max": f"{GIB}\n",
            "pods/memory.max": "max\n",
        },
    )
    assert cgroup_limit(proc, physical=16 * GIB) == GIB
    assert cgroup_limit(proc, physical=GIB) is None  # no less than the machine has


def test_no_limit_file_no_limit(tmp_path: Path) -> None:
    assert cgroup_limit(fake_host(tmp_path, {}), physical=None) is None


def test_an_unreadable_proc_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_limit(tmp_path / "nothing", physical=None) is None


def test_rss_from_statm(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "statm").write_text("50000 12000 3000 100 0 9000 0\n")
    assert rss_bytes(tmp_path) == 12000 * os.sysconf("SC_PAGE_SIZE")
    (tmp_path / "self" / "statm").write_text("garbage\n")
    assert rss_bytes(tmp_path) is None
    assert rss_bytes(tmp_path / "nothing") is None
