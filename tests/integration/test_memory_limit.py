"""sidecache under a memory limit: the figures it reports, and, under a real cgroup
limit, the percentage it resolves and the config it refuses.

The cgroup tests create a cgroup of their own (a parent with the limit and a child
without one, so that the limit is found on an ancestor, as under a systemd slice
or a Kubernetes pod) and start ``sidecache`` in the child by writing the shell's
pid to ``cgroup.procs`` before it execs. They need root and a hierarchy with the
memory controller (cgroup v1, or v2 with ``memory`` in the root's
``cgroup.subtree_control``); elsewhere they are skipped with the reason. The
cgroups are removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.config import load_config, parse_config
from proxy.memfit import PROCESS_OVERHEAD, Machine
from proxy.server import Sidecache
from tests.integration.conftest import stop_gracefully

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024**2
LIMIT = 256 * MIB
LISTENING = re.compile(rb"listening on [^:]+:(\d+) \(control [^:]+:(\d+)\)")


async def stats_and_metrics(control: int) -> tuple[dict[str, object], str]:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{control}/stats") as r:
            stats = await r.json()
        async with client.get(f"http://127.0.0.1:{control}/metrics") as r:
            text = await r.text()
    return stats, text


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


@pytest.mark.parametrize("limit", [LIMIT, None])
async def test_stats_and_metrics_report_rss_the_limit_and_the_headroom(
    upstream: TestServer, limit: int | None
) -> None:
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "upstream": {"url": str(upstream.make_url("/")).rstrip("/")},
            "control": {"listen": "127.0.0.1:0"},
        },
        environ={},
    )
    instance = Sidecache(config, machine=Machine(cgroup_limit=limit, physical=None))
    await instance.start()
    try:
        stats, text = await stats_and_metrics(instance.control_port)
    finally:
        await instance.stop(grace=1.0)
    memory = stats["memory"]
    assert isinstance(memory, dict)
    rss = memory["rss_bytes"]
    if sys.platform.startswith("linux"):
        assert isinstance(rss, int) and rss > 0
        assert metric(text, "sidecache_memory_rss_bytes") is not None
    assert memory["limit_bytes"] == limit
    if limit is None:
        assert memory["headroom_bytes"] is None
        assert "sidecache_memory_limit_bytes" not in text
        assert "sidecache_memory_headroom_bytes" not in text
    else:
        assert isinstance(rss, int)
        assert memory["headroom_bytes"] == limit - rss  # one reading of the RSS
        assert metric(text, "sidecache_memory_limit_bytes") == limit
        assert metric(text, "sidecache_memory_headroom_bytes") is not None


def config_text(upstream_port: int, cache: str, connections: int = 50) -> str:
    return f"""
listen: 127.0.0.1:0
upstream: {{url: "http://127.0.0.1:{upstream_port}", max_connections: {connections}}}
control: {{listen: "127.0.0.1:0"}}
cache: {cache}
routes:
  - {{name: photo, match: "/api/photo/{{id}}", ttl: 5m}}
"""


async def test_a_reload_that_would_not_fit_is_refused_unless_overcommit_is_allowed(
    tmp_path: Path, upstream: TestServer
) -> None:
    path = tmp_path / "sidecache.yaml"
    fits = "{max_bytes: 25%, max_object_bytes: 4MiB}"
    path.write_text(config_text(upstream.port, fits, connections=4))
    machine = Machine(cgroup_limit=LIMIT, physical=None)
    instance = Sidecache(load_config(path, machine=machine), str(path), machine=machine)
    await instance.start()
    try:
        runtime = instance.runtime
        assert runtime is not None
        assert runtime.store.figures().max_bytes == LIMIT // 4
        path.write_text(config_text(upstream.port, "{max_bytes: 128MiB}"))  # 992 MiB in all
        assert instance.reload() is False
        assert runtime.config.cache.max_bytes == LIMIT // 4  # the old config stays
        path.write_text(config_text(upstream.port, "{max_bytes: 128MiB, allow_overcommit: true}"))
        assert instance.reload() is True
        assert runtime.store.figures().max_bytes == 128 * MIB
    finally:
        await instance.stop(grace=1.0)


# -- real processes ----------------------------------------------------------------------


async def start(
    argv: list[str], config: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        "-c",
        str(config),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> None:
    """Kill a process a test left running (after a failure), and read its pipes to
    their end, so that its transport closes now rather than warn when collected."""
    if proc.returncode is None:
        proc.kill()
    async with asyncio.timeout(30):
        await proc.communicate()


async def listening(proc: asyncio.subprocess.Process) -> tuple[int, int]:
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while not (m := LISTENING.search(line := await proc.stderr.readline())):
            assert line, "serve exited before listening"
    return int(m.group(1)), int(m.group(2))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc")
async def test_a_started_idle_sidecache_stays_within_the_overhead_the_check_counts(
    tmp_path: Path, upstream: TestServer
) -> None:
    # PROCESS_OVERHEAD is what `check` and `serve` add per process to the budget:
    # if sidecache itself grows past it, the check under-counts and must change.
    path = tmp_path / "sidecache.yaml"
    path.write_text(config_text(upstream.port, "{max_bytes: 64MiB}"))
    # Not measured by coverage (which the test run may pass on to the processes
    # it starts): its tracer makes a process larger than sidecache is.
    unmeasured = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    proc = await start([sys.executable, "-m", "proxy", "serve"], path, unmeasured)
    try:
        _, control = await listening(proc)
        stats, _ = await stats_and_metrics(control)
        memory = stats["memory"]
        assert isinstance(memory, dict)
        rss = memory["rss_bytes"]
        assert isinstance(rss, int)
        assert 0 < rss <= PROCESS_OVERHEAD, f"idle RSS {rss / MIB:.1f} MiB"
        assert await stop_gracefully(proc) == 0
    finally:
        await finish(proc)


@dataclass
class Cgroup:
    parent: Path  # holds the limit
    child: Path  # where processes run: the limit is its parent's

    def argv(self, *args: str) -> list[str]:
        """A command that joins the child cgroup, then runs ``sidecache args``."""
        join = 'echo $$ > "$1" && shift && exec "$@"'
        procs = str(self.child / "cgroup.procs")
        return ["/bin/sh", "-c", join, "sh", procs, sys.executable, "-m", "proxy", *args]


def _hierarchy() -> tuple[int, Path]:
    """The cgroup hierarchy with the memory controller, or skip saying why not."""
    if not sys.platform.startswith("linux"):
        pytest.skip("cgroups are Linux's")
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    v1 = v2 = None
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount_point, fstype, options = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup" and "memory" in options:
            v1 = mount_point
        elif fstype == "cgroup2" and v2 is None:
            v2 = mount_point
    if v1 is not None:
        return 1, v1
    if v2 is None:
        pytest.skip("no cgroup hierarchy with the memory controller is mounted")
    try:
        enabled = (v2 / "cgroup.subtree_control").read_text().split()
    except OSError as exc:
        pytest.skip(f"cannot read {v2}/cgroup.subtree_control: {exc}")
    if "memory" not in enabled:
        pytest.skip(f"the memory controller is not enabled for children of {v2}")
    return 2, v2


def _remove(cgroup: Path) -> None:
    """Remove a cgroup of ours, killing what a failed test left in it."""
    if not cgroup.exists():
        return
    with contextlib.suppress(OSError):
        for pid in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    cgroup.rmdir()


@pytest.fixture
def cgroup() -> Iterator[Cgroup]:
    version, root = _hierarchy()
    parent = root / f"sidecache-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {root}: {exc}")
    child = parent / "inner"
    try:
        try:
            if version == 1:
                (parent / "memory.limit_in_bytes").write_text(str(LIMIT))
            else:
                (parent / "memory.max").write_text(str(LIMIT))
                (parent / "cgroup.subtree_control").write_text("+memory")
            child.mkdir()
        except OSError as exc:
            pytest.skip(f"cannot set a memory limit on {parent}: {exc}")
        # Joining it is what the tests do: a machine may allow making one but
        # not entering it (delegation rules).
        probe = subprocess.run(
            ["/bin/sh", "-c", 'echo $$ > "$1"', "sh", str(child / "cgroup.procs")],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"cannot move a process into {child}: {probe.stderr.strip()}")
        yield Cgroup(parent, child)
    finally:
        _remove(child)
        _remove(parent)


async def run(argv: list[str], config: Path) -> tuple[int, str, str]:
    proc = await start(argv, config)
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        await finish(proc)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_resolves_a_percentage_against_the_cgroup_limit(
    cgroup: Cgroup, tmp_path: Path
) -> None:
    path = tmp_path / "sidecache.yaml"
    path.write_text(config_text(8000, "{max_bytes: 50%, max_object_bytes: 4MiB}", connections=4))
    code, out, err = await run(cgroup.argv("check"), path)
    assert code == 0, err
    assert (
        "cache.max_bytes 50% of the cgroup memory limit (256MiB) = 134217728 bytes (128MiB)"
    ) in out
    assert (
        "cache.max_bytes 128MiB + overhead 64MiB (1 process) + in flight 16MiB "
        "(upstream.max_connections 4 x 4MiB) = 208MiB at most, within the cgroup memory "
        "limit 256MiB (48MiB to spare)"
    ) in out


@pytest.mark.parametrize("command", ["serve", "check"])
async def test_a_config_that_may_not_fit_the_limit_is_refused_in_one_line(
    cgroup: Cgroup, tmp_path: Path, command: str
) -> None:
    path = tmp_path / "sidecache.yaml"
    path.write_text(config_text(8000, "{max_bytes: 128MiB}"))
    code, out, err = await run(cgroup.argv(command), path)
    assert code == 2
    assert err.splitlines() == [
        f"sidecache: {path}: memory: cache.max_bytes 128MiB + overhead 64MiB (1 process) + "
        "in flight 800MiB (upstream.max_connections 50 x 16MiB) = 992MiB > the cgroup memory "
        "limit 256MiB: lower cache.max_bytes, upstream.max_connections or "
        "cache.max_object_bytes, or set cache.allow_overcommit: true"
    ]
    assert "listening" not in out


async def test_allow_overcommit_lets_it_start_over_the_limit(
    cgroup: Cgroup, tmp_path: Path
) -> None:
    path = tmp_path / "sidecache.yaml"
    path.write_text(config_text(8000, "{max_bytes: 128MiB, allow_overcommit: true}"))
    code, out, err = await run(cgroup.argv("check"), path)
    assert code == 0, err
    assert "= 992MiB at most, over the cgroup memory limit 256MiB (cache.allow_overcommit)" in out


@pytest.fixture
async def served_in(
    cgroup: Cgroup, tmp_path: Path, upstream: TestServer
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, int]]:
    path = tmp_path / "sidecache.yaml"
    path.write_text(
        config_text(upstream.port, "{max_bytes: 25%, max_object_bytes: 4MiB}", connections=4)
    )
    proc = await start(cgroup.argv("serve"), path)
    try:
        public, control = await listening(proc)
        yield proc, public, control
    finally:
        await finish(proc)


async def test_serve_under_the_limit_reports_it_and_the_resolved_budget(
    served_in: tuple[asyncio.subprocess.Process, int, int],
) -> None:
    proc, public, control = served_in
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{public}/api/photo/1") as r,
    ):
        assert r.status == 200
    stats, text = await stats_and_metrics(control)
    cache, memory = stats["cache"], stats["memory"]
    assert isinstance(cache, dict) and isinstance(memory, dict)
    assert cache["max_bytes"] == LIMIT // 4
    assert memory["limit_bytes"] == LIMIT
    assert memory["headroom_bytes"] == LIMIT - memory["rss_bytes"]
    assert metric(text, "sidecache_memory_limit_bytes") == LIMIT
    assert metric(text, "sidecache_cache_max_bytes") == LIMIT // 4
    assert await stop_gracefully(proc) == 0
