"""Hit path per eviction policy, end to end: the same sidecache once per
``cache.policy``, driven by ``wrk`` in interleaved rounds.

Starts the bench upstream and one sidecache per policy (the configuration of
``bench/run.py``, access log on, only ``cache.policy`` differs), warms every
object in each until it is a hit, then runs ``--rounds`` rounds; in each round
every sidecache gets one ``wrk`` run of ``--duration`` seconds, in turn, so a
slow spell of the machine falls on all of them. It prints each policy's
hits/s per round, their median, the median's change against the first policy
named (the reference, ``lru`` by default) and the serving process's CPU time per
hit over all its rounds. Servers are pinned to core 0 and ``wrk`` to core 1 on a machine with 2
cores or more.

    .venv/bin/python -m bench.policies                       # lru against gdsf
    .venv/bin/python -m bench.policies --policies lru,gdsf,tinylfu --rounds 6

Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.run import (
    ROOT,
    SERVER_CPU,
    SIDECACHE_CONF,
    WRK_CPU,
    default_connections,
    free_port,
    object_paths,
    parse_size,
    parse_wrk,
    pinned,
    process,
    run_wrk,
    wait_http,
    warm,
    wrk_script,
)
from proxy.budget import DEFAULT_POLICY, POLICIES


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_hit(cpu: list[float], rates: list[float], duration: int) -> float:
    """CPU seconds per hit over every round: all the CPU time over all the hits."""
    hits = sum(rates) * duration
    return sum(cpu) / hits if hits else 0.0


def change(value: float, reference: float) -> str:
    return f"{(value - reference) / reference:+.1%}" if reference else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__)
    p.add_argument("--policies", default=f"lru,{DEFAULT_POLICY}", help="the first is the reference")
    p.add_argument("--size", default="8KB", help="body size (default 8KB)")
    p.add_argument("--objects", type=int, default=50, help="distinct objects (default 50)")
    p.add_argument("--rounds", type=int, default=4, help="wrk runs per policy (default 4)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    args = p.parse_args(argv)
    policies = [name for name in args.policies.split(",") if name]
    unknown = [name for name in policies if name not in POLICIES]
    if unknown or len(policies) < 2 or len(set(policies)) != len(policies):
        print(f"--policies: two or more of {', '.join(POLICIES)}, each once")
        return 2
    if args.rounds < 1 or args.duration < 1 or args.objects < 1:
        print("--rounds, --duration and --objects must be at least 1")
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)")
        return 2
    size = parse_size(args.size)
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, wrk_cpu = (SERVER_CPU, WRK_CPU) if pin else (None, None)
    paths = object_paths(size, args.objects)
    conns = default_connections(size)

    with (
        tempfile.TemporaryDirectory(prefix="sidecache-policies-") as tmpdir,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        log = stack.enter_context(open(tmp / "servers.log", "wb"))
        up = free_port()
        stack.enter_context(
            process(
                pinned([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up)], server_cpu),
                stdout=log,
                stderr=log,
            )
        )
        bases: dict[str, str] = {}
        pids: dict[str, int] = {}
        for name in policies:
            port, control = free_port(), free_port()
            config = tmp / f"{name}.yaml"
            conf = SIDECACHE_CONF.format(port=port, upstream=up, control=control, access_log="json")
            config.write_text(conf.replace("cache: {", f"cache: {{policy: {name}, ", 1))
            access = stack.enter_context(open(tmp / f"{name}-access.log", "wb"))
            proc = stack.enter_context(
                process(
                    pinned([sys.executable, "-m", "proxy", "serve", "-c", str(config)], server_cpu),
                    cwd=ROOT,
                    stdout=access,
                    stderr=access,
                )
            )
            bases[name], pids[name] = f"http://127.0.0.1:{port}", proc.pid
            wait_http(f"http://127.0.0.1:{control}/healthz")
        wait_http(f"http://127.0.0.1:{up}{paths[0]}")
        for name, base in bases.items():
            warm(name, base, paths, size, "X-Cache")
        script = tmp / "objects.lua"
        script.write_text(wrk_script(paths))
        print(
            f"{args.size} hits, {args.objects} objects, {conns} connections, access log on, "
            f"{args.rounds} rounds of {args.duration} s, "
            + (f"servers on CPU {server_cpu}, wrk on CPU {wrk_cpu}" if pin else "no pinning"),
            flush=True,
        )
        rates: dict[str, list[float]] = {name: [] for name in policies}
        cpu: dict[str, list[float]] = {name: [] for name in policies}
        for round_ in range(args.rounds):
            # Every other round in reverse order: a drift of the machine's speed
            # during a round favours neither end of it.
            order = list(bases.items())
            for name, base in order if round_ % 2 == 0 else reversed(order):
                before = cpu_seconds(pids[name])
                result = parse_wrk(
                    run_wrk(base, script, conns, args.duration, wrk_cpu),
                    name, args.size, conns, args.duration,
                )  # fmt: skip
                if result.errors:
                    print(f"{name}: {result.errors} errors in a round")
                    return 1
                rates[name].append(result.requests_per_s)
                cpu[name].append(cpu_seconds(pids[name]) - before)

    reference = statistics.median(rates[policies[0]])
    print("| policy | hits/s per round | median | vs " + policies[0] + " | CPU per hit |")
    print("|---|---|---:|---:|---:|")
    for name in policies:
        median = statistics.median(rates[name])
        rounds = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(
            f"| {name} | {rounds} | {median:,.0f} | {change(median, reference)} "
            f"| {per_hit(cpu[name], rates[name], args.duration) * 1e6:.1f} µs |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
