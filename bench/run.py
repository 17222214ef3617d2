"""Cache-hit benchmark: sidecache against nginx ``proxy_cache``, in one run.

Starts the bench upstream, nginx (Debian's binary, ``worker_processes 1``) and
sidecache (one process) on loopback, warms both caches, then drives each with
``wrk`` for an 8 KB and a 2.5 MB body and reports requests/s, transfer/s and
latency percentiles, and sidecache's ratio to nginx. Everything it starts is
stopped on exit, Ctrl-C included.

    .venv/bin/python bench/run.py                   # 10 s per run
    .venv/bin/python bench/run.py --quick           # 3 s per run
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
IDS = 4  # objects per size, rotated by the wrk script

NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
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
  - {{name: blob, match: "/blob/{{id}}", ttl: 5m}}
  - {{name: small, match: "/small/{{id}}", ttl: 5m}}
"""

ROTATE_LUA = """
local i = 0
request = function()
  i = (i + 1) % {ids}
  return wrk.format("GET", "{prefix}" .. i)
end
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


def fetch_header(url: str, header: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        r.read()
        return str(r.headers.get(header, ""))


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


def run_wrk(
    name: str, base: str, size: str, prefix: str, connections: int, duration: int, tmp: Path
) -> Result:
    script = tmp / f"rotate-{size}.lua"
    script.write_text(ROTATE_LUA.format(ids=IDS, prefix=prefix))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * _UNITS_MS[u] for p, v, u in _LATENCY.findall(out)}
    t = _TRANSFER.search(out)
    transfer = float(t.group(1)) * _BYTES[t.group(2)] if t else 0.0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Result(
        name, size, connections, duration, rps, transfer,
        latency.get("50", 0.0), latency.get("90", 0.0), latency.get("99", 0.0), errors,
    )  # fmt: skip


def markdown(results: list[Result], command: str) -> str:
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, command: `{command}`",
        "",
        "| body | target | conns | req/s | MB/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.size} | {r.target} | {r.connections} | {r.requests_per_s:,.0f} | "
            f"{r.transfer_mb_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    lines += [
        "",
        "| body | throughput sidecache/nginx | p99 latency sidecache/nginx |",
        "|---|---|---|",
    ]
    for size in dict.fromkeys(r.size for r in results):
        by = {r.target: r for r in results if r.size == size}
        if "sidecache" in by and "nginx" in by:
            s, n = by["sidecache"], by["nginx"]
            lines.append(
                f"| {size} | {s.requests_per_s / n.requests_per_s:.2f}x | "
                f"{s.p99_ms / n.p99_ms:.2f}x |"
            )
    return "\n".join(lines)


def update_markdown(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else "<!-- bench:start -->\n<!-- bench:end -->\n"
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="3 s per run")
    parser.add_argument("--only", choices=["small", "large"])
    parser.add_argument("--small-connections", type=int, default=32)
    parser.add_argument("--large-connections", type=int, default=16)
    parser.add_argument(
        "--sidecache-cmd",
        default=f"{sys.executable} -m proxy serve",
        help="how to start sidecache (gets -c CONFIG appended)",
    )
    parser.add_argument("--markdown", type=Path, help="update this file between bench markers")
    parser.add_argument(
        "--access-log",
        choices=["off", "json", "text"],
        default="off",
        help="sidecache's access log (off, like nginx's access_log off here)",
    )
    args = parser.parse_args(argv)
    duration = 3 if args.quick else args.duration
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed (Debian: apt-get install nginx-light wrk)")
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    sizes = [
        ("8KB", "/small/", args.small_connections),
        ("2.5MB", "/blob/", args.large_connections),
    ]
    if args.only:
        sizes = [s for s in sizes if (s[0] == "8KB") == (args.only == "small")]

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sidecache-bench-") as tmpdir:
        tmp = Path(tmpdir)
        up, ng, sc, ctl = free_port(), free_port(), free_port(), free_port()
        (tmp / "nginx.conf").write_text(
            NGINX_CONF.format(
                # As root, nginx's workers would switch to an account that cannot
                # write the private temp dir; keep them on the same user.
                user="user root;" if os.geteuid() == 0 else "",
                tmp=tmp,
                upstream=up,
                port=ng,
            )
        )
        (tmp / "sidecache.yaml").write_text(
            SIDECACHE_CONF.format(port=sc, upstream=up, control=ctl, access_log=args.access_log)
        )
        log = open(tmp / "servers.log", "wb")  # noqa: SIM115 - closed with the temp dir
        quiet = {"stdout": log, "stderr": log}
        with (
            process([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up)], **quiet),
            process([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], **quiet),
            process(
                [*args.sidecache_cmd.split(), "-c", str(tmp / "sidecache.yaml")], cwd=ROOT, **quiet
            ),
        ):
            try:
                wait_http(f"http://127.0.0.1:{up}/small/0")
                wait_http(f"http://127.0.0.1:{ng}/small/0")
                wait_http(f"http://127.0.0.1:{ctl}/healthz")
            except RuntimeError:
                log.flush()
                print(
                    (tmp / "servers.log").read_text(),
                    (tmp / "error.log").read_text() if (tmp / "error.log").exists() else "",
                )
                raise
            wait_http(f"http://127.0.0.1:{ng}/small/0")
            wait_http(f"http://127.0.0.1:{ctl}/healthz")
            targets = {
                "nginx": (f"http://127.0.0.1:{ng}", "X-Cache-Status"),
                "sidecache": (f"http://127.0.0.1:{sc}", "X-Cache"),
            }
            for _size, prefix, _ in sizes:
                for name, (base, header) in targets.items():
                    for i in range(IDS):
                        url = f"{base}{prefix}{i}"
                        fetch_header(url, header)
                        if fetch_header(url, header) != "HIT":
                            raise RuntimeError(f"{name} did not cache {url}")
            for size, prefix, conns in sizes:
                for name, (base, _) in targets.items():
                    r = run_wrk(name, base, size, prefix, conns, duration, tmp)
                    results.append(r)
                    print(
                        f"{size:>6} {name:<10} {r.requests_per_s:>10,.0f} req/s "
                        f"{r.transfer_mb_per_s:>8,.0f} MB/s  p50 {r.p50_ms:.2f} ms  "
                        f"p99 {r.p99_ms:.2f} ms  errors {r.errors}",
                        flush=True,
                    )
    command = "python bench/run.py" + (" --quick" if args.quick else f" --duration {duration}")
    table = markdown(results, command)
    print()
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    if args.markdown:
        update_markdown(args.markdown, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
