"""Finding and reading the cgroup memory limit from file contents (proxy/cgroup.py)."""

from __future__ import annotations

import pytest

from proxy.cgroup import (
    LimitFiles,
    Membership,
    Mount,
    effective_limit,
    limit_files,
    parse_limit,
    parse_membership,
    parse_mounts,
)

GIB = 1024**3

# /proc/self/cgroup of a process in a systemd service on a pure cgroup v2 host.
V2_CGROUP = "0::/system.slice/sidecache.service\n"
# A hybrid host: v1 controllers, the memory one among them, and a v2 hierarchy.
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
5:devices:/
4:memory:/jobs/d96f0d8a
3:cpu,cpuacct:/
0::/
"""
V2_MOUNTINFO = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A Docker container without a cgroup namespace: the mount shows its own cgroup.
DOCKER_V1_MOUNTINFO = (
    "612 605 0:32 /docker/4f1c /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 "
    "- cgroup cgroup rw,memory\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (V2_CGROUP, Membership(v2="/system.slice/sidecache.service", v1_memory=None)),
        (HYBRID_CGROUP, Membership(v2="/", v1_memory="/jobs/d96f0d8a")),
        ("7:cpuset:/\n6:memory,hugetlb:/docker/4f1c\n", Membership(None, "/docker/4f1c")),
        # A path with ':' in it, and garbage lines, are read as they are.
        ("0::/a:b\nnonsense\n", Membership(v2="/a:b", v1_memory=None)),
        ("", Membership(None, None)),
    ],
)
def test_membership(text: str, expected: Membership) -> None:
    assert parse_membership(text) == expected


@pytest.mark.parametrize(
    ("text", "v2", "v1"),
    [
        (V2_MOUNTINFO, Mount(2, "/", "/sys/fs/cgroup"), None),
        (
            HYBRID_MOUNTINFO,
            Mount(2, "/", "/sys/fs/cgroup/unified"),
            Mount(1, "/", "/sys/fs/cgroup/memory"),
        ),
        (DOCKER_V1_MOUNTINFO, None, Mount(1, "/docker/4f1c", "/sys/fs/cgroup/memory")),
        # mountinfo escapes spaces in paths as \040.
        (
            "40 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 none rw\n",
            Mount(2, "/", "/mnt/my cgroups"),
            None,
        ),
        ("", None, None),
        ("no separator here\n", None, None),
    ],
)
def test_mounts(text: str, v2: Mount | None, v1: Mount | None) -> None:
    assert parse_mounts(text) == (v2, v1)


def test_v2_files_are_the_cgroup_then_each_ancestor_up_to_the_mount() -> None:
    files = limit_files(parse_membership(V2_CGROUP), *parse_mounts(V2_MOUNTINFO))
    assert files == LimitFiles(
        2,
        (
            "/sys/fs/cgroup/system.slice/sidecache.service/memory.max",
            "/sys/fs/cgroup/system.slice/memory.max",
            "/sys/fs/cgroup/memory.max",
        ),
    )


def test_a_hybrid_host_reads_the_v1_memory_hierarchy() -> None:
    files = limit_files(parse_membership(HYBRID_CGROUP), *parse_mounts(HYBRID_MOUNTINFO))
    assert files == LimitFiles(
        1,
        (
            "/sys/fs/cgroup/memory/jobs/d96f0d8a/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ),
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # The container's own cgroup is the mount point.
        ("/docker/4f1c", ("/sys/fs/cgroup/memory/memory.limit_in_bytes",)),
        (
            "/docker/4f1c/inner",
            (
                "/sys/fs/cgroup/memory/inner/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            ),
        ),
        # Not under what the mount shows: the mount point is the closest there is.
        ("/docker/other", ("/sys/fs/cgroup/memory/memory.limit_in_bytes",)),
        ("/docker/4f1cxyz", ("/sys/fs/cgroup/memory/memory.limit_in_bytes",)),
    ],
)
def test_a_container_sees_its_own_cgroup_at_the_mount_point(
    path: str, expected: tuple[str, ...]
) -> None:
    membership = Membership(v2=None, v1_memory=path)
    assert limit_files(membership, *parse_mounts(DOCKER_V1_MOUNTINFO)) == LimitFiles(1, expected)


def test_a_v2_namespace_root_is_the_mount_point() -> None:
    files = limit_files(Membership(v2="/", v1_memory=None), *parse_mounts(V2_MOUNTINFO))
    assert files == LimitFiles(2, ("/sys/fs/cgroup/memory.max",))


@pytest.mark.parametrize(
    ("membership", "mounts"),
    [
        # In a v1 memory cgroup, but that hierarchy is not mounted, nor is v2.
        (Membership(v2=None, v1_memory="/a"), V2_MOUNTINFO.replace("cgroup2", "tmpfs")),
        (Membership(v2=None, v1_memory=None), HYBRID_MOUNTINFO),
        (Membership(v2="/a", v1_memory=None), ""),
    ],
)
def test_no_memory_hierarchy_means_no_files(membership: Membership, mounts: str) -> None:
    assert limit_files(membership, *parse_mounts(mounts)) is None


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("1073741824\n", GIB),
        ("536870912", GIB // 2),
        ("max\n", None),  # v2: no limit
        ("9223372036854771712\n", None),  # v1: no limit, 4 KiB pages
        ("9223372036854710272\n", None),  # v1: no limit, 64 KiB pages
        (str(2**62 - 1), 2**62 - 1),
        ("", None),
        ("-1", None),
        ("12 MiB", None),
    ],
)
def test_limit_values(text: str, limit: int | None) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize(
    ("texts", "physical", "limit"),
    [
        # A parent's limit binds its children: the smallest one counts.
        (["max\n", "1073741824\n", "max\n"], 16 * GIB, GIB),
        (["536870912\n", "1073741824\n"], 16 * GIB, GIB // 2),
        ([None, "1073741824\n", None], 16 * GIB, GIB),  # a file that is not there
        (["max\n", "max\n"], 16 * GIB, None),
        ([], 16 * GIB, None),
        # A limit at or above physical memory never binds first: no limit.
        (["17179869184\n"], 16 * GIB, None),
        (["17179869183\n"], 16 * GIB, 16 * GIB - 1),
        (["17179869184\n"], None, 16 * GIB),  # physical memory unknown
    ],
)
def test_the_effective_limit(texts: list[str | None], physical: int | None, limit: int) -> None:
    assert effective_limit(texts, physical) == limit
