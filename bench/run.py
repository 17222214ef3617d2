"""Cache-hit benchmark: sidecache, nginx ``proxy_cache`` and a raw uvloop server, in one run.

Starts the bench upstream, nginx (Debian's binary, ``worker_processes 1``),
sidecache (one process) and ``bench/rawserver.py`` (a bare uvloop protocol
writing prebuilt responses: what the machine can do from Python) on loopback.
For each body size it serves ``--objects`` distinct objects (50 by default, so
the bodies do not all sit in the CPU cache); every object is fetched through
nginx and sidecache until both answer it as a hit. Then ``wrk`` (one thread, a
generated Lua script going round-robin over the objects) drives each server in
turn and the run reports requests/s, latency percentiles and sidecache's ratios
to nginx and to the raw server.

CPU: on a machine with 2 cores or more the servers are pinned to core 0 and
``wrk`` to core 1 (``taskset``), so each server under test has one core, like
nginx's single worker. Access logs (``--access-log``, on by default) are written
by both proxies to files in the run's temp dir: sidecache's JSON lines (its
stderr) and nginx's ``log_format`` with the same fields. Everything it starts is
stopped on exit, Ctrl-C included; every step has a time limit.

    .venv/bin/python bench/run.py                        # 10 s per run
    .venv/bin/python bench/run.py --quick                # 3 s per run
    .venv/bin/python bench/run.py --sizes 8KB --objects 4 --access-log off
    .venv/bin/python bench/run.py --markdown BENCHMARKS.md

Needs ``nginx`` and ``wrk`` (Debian: ``apt-get install nginx-light wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_SIZES = "8KB,64KB,2.5MB"
MAX_SIZE = 16 * 1024 * 1024  # sidecache's max_object_bytes below
SERVER_CPU, WRK_CPU = 0, 1

NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench escape=json '{{"time":"$time_iso8601","client":"$remote_addr",'
        '"method":"$request_method","path":"$uri","query":"$args","status":$status,'
        '"cache":"$upstream_cache_status","bytes":$body_bytes_sent,'
        '"duration_s":$request_time,"upstream_s":"$upstream_response_time"}}';
    {access_log}
    sendfile on;
    # Not tcp_nopush: with it, 64 KB hits stall about 40 ms each (the last
    # segment waits on the socket's cork), 15 times fewer hits/s than without.
    tcp_nopush off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=bench:10m max_size=1g inactive=10m;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 5m;
            proxy_cache_lock on;
            proxy_buffering on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""

SIDECACHE_CONF = """
listen: 127.0.0.1:{port}
upstream: {{url: "http://127.0.0.1:{upstream}"}}
control: {{listen: "127.0.0.1:{control}"}}
cache: {{max_bytes: 1GiB, max_object_bytes: 16MiB}}
log: {{access: {access_log}}}
routes:
  - {{name: bytes, match: "/bytes/{{size}}/{{id}}", ttl: 5m}}
"""


@dataclass(frozen=True)
class Result:
    target: str
    size: str
    connections: int
    duration_s: int
    requests_per_s: float
    transfer_mb_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)(B|KB|MB)$", re.I)
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024 * 1024}


def parse_size(text: str) -> int:
    """``8KB`` -> 8192, ``2.5MB`` -> 2621440 (binary units, as the bench always used)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 8KB, 64KB, 2.5MB)")
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    if not 0 < size <= MAX_SIZE:
        raise ValueError(f"size out of range (1 B to 16MB): {text!r}")
    return size


def size_label(size: int) -> str:
    """2621440 -> ``2.5MB``, 8192 -> ``8KB``, 100 -> ``100B``."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g}MB"
    if size >= 1024:
        return f"{size / 1024:g}KB"
    return f"{size}B"


def object_paths(size: int, objects: int) -> list[str]:
    """The working set of one size: ``/bytes/{size}/0`` .. ``/bytes/{size}/{objects-1}``."""
    return [f"/bytes/{size}/{i}" for i in range(objects)]


def default_connections(size: int) -> int:
    return 32 if size <= 64 * 1024 else 16


def wrk_script(paths: list[str]) -> str:
    """A wrk Lua script sending GETs round-robin over ``paths`` (each request
    formatted once, on first use)."""
    listed = ", ".join(json.dumps(p) for p in paths)
    return f"""-- generated by bench/run.py: GET round-robin over {len(paths)} paths
local paths = {{{listed}}}
local requests = {{}}
local i = 0
request = function()
  i = i % #paths + 1
  local r = requests[i]
  if r == nil then
    r = wrk.format("GET", paths[i])
    requests[i] = r
  end
  return r
end
"""


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` run on one CPU (``taskset``), or as is when ``cpu`` is None."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wait_http(url: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {deadline_s}s") from None
            time.sleep(0.1)


@contextlib.contextmanager
def process(cmd: list[str], **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


_LATENCY = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_TRANSFER = re.compile(r"Transfer/sec:\s+([\d.]+)([KMG]?B)")
_BYTES = {"B": 1 / 1e6, "KB": 1024 / 1e6, "MB": 1024**2 / 1e6, "GB": 1024**3 / 1e6}


def parse_wrk(out: str, target: str, size: str, connections: int, duration: int) -> Result:
    """A ``wrk --latency`` report as a Result (errors: socket errors and non-2xx/3xx)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{out}")
    latency = {p: float(v) * _UNITS_MS[u] for p, v, u in _LATENCY.findall(out)}
    t = _TRANSFER.search(out)
    transfer = float(t.group(1)) * _BYTES[t.group(2)] if t else 0.0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Result(
        target, size, connections, duration, float(rps.group(1)), transfer,
        latency.get("50", 0.0), latency.get("90", 0.0), latency.get("99", 0.0), errors,
    )  # fmt: skip


def run_wrk(base: str, script: Path, connections: int, duration: int, cpu: int | None) -> str:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    return subprocess.run(
        pinned([*cmd, base], cpu),
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout


def median_result(rounds: list[Result]) -> Result:
    """One target's rounds at one size as one result: each figure the median of
    its rounds (errors: their sum), so that one round the VM slowed down does not
    decide a ratio."""
    if not rounds:
        raise ValueError("no rounds")
    first = rounds[0]

    def mid(values: list[float]) -> float:
        return float(statistics.median(values))

    return Result(
        first.target,
        first.size,
        first.connections,
        first.duration_s,
        mid([r.requests_per_s for r in rounds]),
        mid([r.transfer_mb_per_s for r in rounds]),
        mid([r.p50_ms for r in rounds]),
        mid([r.p90_ms for r in rounds]),
        mid([r.p99_ms for r in rounds]),
        sum(r.errors for r in rounds),
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def markdown(results: list[Result], header: str) -> str:
    lines = [
        header,
        "",
        "| body | server | conns | req/s | MB/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.size} | {r.target} | {r.connections} | {r.requests_per_s:,.0f} | "
            f"{r.transfer_mb_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    lines += [
        "",
        "| body | req/s sidecache/nginx | req/s sidecache/raw | p99 sidecache/nginx |",
        "|---|---|---|---|",
    ]
    for size in dict.fromkeys(r.size for r in results):
        by = {r.target: r for r in results if r.size == size}
        s, n, raw = by.get("sidecache"), by.get("nginx"), by.get("raw")
        if s is None:
            continue
        lines.append(
            f"| {size} | "
            + (_ratio(s.requests_per_s, n.requests_per_s) if n else "-")
            + " | "
            + (_ratio(s.requests_per_s, raw.requests_per_s) if raw else "-")
            + " | "
            + (_ratio(s.p99_ms, n.p99_ms) if n else "-")
            + " |"
        )
    return "\n".join(lines)


def update_markdown(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else "<!-- bench:start -->\n<!-- bench:end -->\n"
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def fetch(url: str) -> tuple[int, dict[str, str], int]:
    """Status, headers and body length of a GET."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, dict(r.headers.items()), len(r.read())


def warm(name: str, base: str, paths: list[str], size: int, hit_header: str | None) -> None:
    """Fetch every object once, then check it is served whole and, for a cache, as a hit."""
    if hit_header is not None:
        for path in paths:
            fetch(base + path)
    for path in paths:
        status, headers, length = fetch(base + path)
        if status != 200 or length != size:
            raise RuntimeError(f"{name}: {base}{path} gave {status} with {length} bytes")
        if hit_header is not None and headers.get(hit_header) != "HIT":
            raise RuntimeError(f"{name} did not cache {base}{path} ({hit_header} not HIT)")


def parse_sizes(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(parse_size(s) for s in text.split(",") if s.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The servers' logs and access logs are in a temp dir, removed at the end; "
        "results also go to bench/results/latest.json.",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--quick", action="store_true", help="3 s per wrk run")
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"body sizes, comma-separated, binary units (default {DEFAULT_SIZES})",
    )
    p.add_argument("--objects", type=int, default=50, help="distinct objects per size (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="wrk runs per server and size, interleaved across the servers; the "
        "tables give the median of each figure (default 3; every round is in "
        "latest.json)",
    )
    p.add_argument(
        "--connections",
        type=int,
        help="wrk connections for every size (default 32 up to 64KB, 16 above)",
    )
    p.add_argument(
        "--access-log",
        choices=["on", "off"],
        default="on",
        help="access logs of both proxies, to files (on: sidecache's JSON log, its "
        "default, and an nginx JSON log_format with the same fields; default on)",
    )
    p.add_argument(
        "--sidecache-cmd",
        default=f"{sys.executable} -m proxy serve",
        help="how to start sidecache (gets -c CONFIG appended; run from this checkout)",
    )
    p.add_argument("--markdown", type=Path, help="update this file between bench markers")
    return p


def command_line(args: argparse.Namespace, duration: int) -> str:
    parts = ["python bench/run.py", "--quick" if args.quick else f"--duration {duration}"]
    if args.sizes != parse_sizes(DEFAULT_SIZES):
        parts.append("--sizes " + ",".join(size_label(s) for s in args.sizes))
    if args.objects != 50:
        parts.append(f"--objects {args.objects}")
    if args.rounds != 3:
        parts.append(f"--rounds {args.rounds}")
    if args.connections:
        parts.append(f"--connections {args.connections}")
    if args.access_log != "on":
        parts.append(f"--access-log {args.access_log}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    duration = 3 if args.quick else args.duration
    if args.objects < 1:
        print("--objects must be at least 1")
        return 2
    if args.rounds < 1:
        print("--rounds must be at least 1")
        return 2
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed (Debian: apt-get install nginx-light wrk)")
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, wrk_cpu = (SERVER_CPU, WRK_CPU) if pin else (None, None)
    log_on = args.access_log == "on"

    results: list[Result] = []  # per size and target: the median of its rounds
    every: list[dict[str, object]] = []  # every round, as measured
    with tempfile.TemporaryDirectory(prefix="sidecache-bench-") as tmpdir:
        tmp = Path(tmpdir)
        up, ng, sc, ctl, raw = (free_port() for _ in range(5))
        (tmp / "nginx.conf").write_text(
            NGINX_CONF.format(
                # As root, nginx's workers would switch to an account that cannot
                # write the private temp dir; keep them on the same user.
                user="user root;" if os.geteuid() == 0 else "",
                tmp=tmp,
                upstream=up,
                port=ng,
                access_log=f"access_log {tmp}/nginx-access.log bench;"
                if log_on
                else "access_log off;",
            )
        )
        (tmp / "sidecache.yaml").write_text(
            SIDECACHE_CONF.format(
                port=sc, upstream=up, control=ctl, access_log="json" if log_on else "off"
            )
        )
        servers_log = open(tmp / "servers.log", "wb")  # noqa: SIM115 - closed with the temp dir
        sidecache_log = open(tmp / "sidecache.log", "wb")  # noqa: SIM115 - same
        quiet = {"stdout": servers_log, "stderr": servers_log}
        sizes_arg = ",".join(str(s) for s in args.sizes)
        with (
            process(
                pinned([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up)], server_cpu),
                **quiet,
            ),
            process(
                pinned([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], server_cpu), **quiet
            ),
            process(
                pinned(
                    [*args.sidecache_cmd.split(), "-c", str(tmp / "sidecache.yaml")], server_cpu
                ),
                cwd=ROOT,
                stdout=sidecache_log,
                stderr=sidecache_log,
            ),
            process(
                pinned(
                    [
                        sys.executable,
                        "-m",
                        "bench.rawserver",
                        str(raw),
                        sizes_arg,
                        str(args.objects),
                    ],
                    server_cpu,
                ),
                cwd=ROOT,
                **quiet,
            ),
        ):
            targets = {
                "nginx": (f"http://127.0.0.1:{ng}", "X-Cache-Status"),
                "sidecache": (f"http://127.0.0.1:{sc}", "X-Cache"),
                "raw": (f"http://127.0.0.1:{raw}", None),
            }
            first = object_paths(args.sizes[0], 1)[0]
            try:
                wait_http(f"http://127.0.0.1:{up}{first}")
                wait_http(f"http://127.0.0.1:{ng}{first}")
                wait_http(f"http://127.0.0.1:{ctl}/healthz")
                wait_http(f"http://127.0.0.1:{raw}{first}", deadline_s=60)
            except RuntimeError:
                for f in ("servers.log", "sidecache.log", "error.log"):
                    if (tmp / f).exists():
                        print(f"--- {f}\n{(tmp / f).read_text()}")
                raise
            for size in args.sizes:
                paths = object_paths(size, args.objects)
                for name, (base, header) in targets.items():
                    warm(name, base, paths, size, header)
            print(
                f"{args.objects} objects per size, access log {args.access_log}, "
                + (f"servers on CPU {server_cpu}, wrk on CPU {wrk_cpu}" if pin else "no pinning"),
                flush=True,
            )
            for size in args.sizes:
                label = size_label(size)
                conns = args.connections or default_connections(size)
                script = tmp / f"objects-{size}.lua"
                script.write_text(wrk_script(object_paths(size, args.objects)))
                measured: dict[str, list[Result]] = {name: [] for name in targets}
                # Rounds interleaved (nginx, sidecache, raw, nginx, ...): a slow
                # spell of the machine falls on every server, not on one.
                for round_ in range(args.rounds):
                    for name, (base, _) in targets.items():
                        # The access log the previous server wrote is written back
                        # to disk now, not by the kernel during this server's run.
                        os.sync()
                        out = run_wrk(base, script, conns, duration, wrk_cpu)
                        r = parse_wrk(out, name, label, conns, duration)
                        measured[name].append(r)
                        every.append({**asdict(r), "round": round_ + 1})
                        print(
                            f"{label:>6} {name:<10} round {round_ + 1} "
                            f"{r.requests_per_s:>10,.0f} req/s "
                            f"{r.transfer_mb_per_s:>8,.0f} MB/s  p50 {r.p50_ms:.2f} ms  "
                            f"p99 {r.p99_ms:.2f} ms  errors {r.errors}",
                            flush=True,
                        )
                results.extend(median_result(rounds) for rounds in measured.values())
        for f in ("sidecache.log", "nginx-access.log"):
            if (tmp / f).exists():
                print(f"{f}: {(tmp / f).stat().st_size / 1e6:,.1f} MB written")
    header = (
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {args.objects} objects per size, "
        f"access logs {args.access_log}, figures: the median of {args.rounds} "
        f"interleaved {duration} s rounds, command: `{command_line(args, duration)}`"
    )
    table = markdown(results, header)
    print()
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"median": [asdict(r) for r in results], "rounds": every}
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    if args.markdown:
        update_markdown(args.markdown, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
