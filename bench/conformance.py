"""HTTP caching conformance: sidecache through the ``http-cache-tests`` suite.

Installs the suite (the npm package behind cache-tests.fyi, pinned to
``SUITE_VERSION``) into a folder of the user's cache directory reused between
runs, starts the suite's own test server on loopback, starts sidecache in front
of it with one catch-all route (``match: "/{rest:path}"``, ``freshness:
origin``, nothing else), runs the suite's command-line client against
sidecache's public port, and prints the required and optional pass counts next
to those of every proxy whose results the package ships.

    python -m bench.conformance                       # the table
    python -m bench.conformance --failures            # and every failing test
    python -m bench.conformance --floor bench/conformance-floor.json  # CI: fail below it
    python -m bench.conformance --id freshness-max-age    # one test, its requests and responses

A test passes when its result is exactly ``true``. Its kind comes from the
suite's own definitions: ``required`` (or no kind, which the suite counts as
required) and ``optimal`` (counted here as optional); ``check`` tests only
gather information and are not counted, and browser-only tests are not run
against a proxy. Dependencies between tests are not applied (cache-tests.fyi
greys out a test whose dependency failed; here it counts as it ran).

sidecache's own 5xx answers are reported: an access-log entry with a status of
500 or more, for a path the app never answered with that status. A 502 or 504
for a request the app dropped without answering (the suite closes connections
on purpose in some tests) is a gateway's answer and reported apart.

``--ttl`` adds the route's default lifetime; ``--no-freshness-key --ttl 5m``
measures code from before routes had ``freshness`` (when ``ttl`` was required).

Everything runs on 127.0.0.1, every step has a time limit, and every process
started is stopped on exit (Ctrl-C and SIGTERM included). Needs Node.js and npm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "http-cache-tests"
SUITE_VERSION = "0.4.5"
FLOOR = ROOT / "bench" / "conformance-floor.json"

INSTALL_TIMEOUT_S = 300.0  # the first run only: later runs reuse the installed suite
START_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 180.0  # the whole suite takes about 20 s
NODE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

# The route under test: ``freshness: origin`` is its only key besides name and
# match (``route_lines``; --ttl and --no-freshness-key change them).
CONFIG = """\
listen: 127.0.0.1:0
upstream: {{url: "http://127.0.0.1:{app_port}"}}
control: {{listen: "127.0.0.1:0"}}
log: {{access: json}}
routes:
  - name: all
    match: "/{{rest:path}}"
{route_lines}"""

# The suite's server, bound to loopback (it listens on every address by itself),
# and every answer it gives written down: method, target, status (null when it
# closed the connection without answering), the test that asked (the client's
# ``Test-ID``) and when (ms): with --keep, a failing test's paths, hence its
# lines in sidecache's log.
SERVER_WRAPPER = """\
import fs from 'node:fs'
import http from 'node:http'
const answers = process.env.CONFORMANCE_ANSWERS
const createServer = http.createServer
http.createServer = function (...args) {{
  const server = createServer.apply(this, args)
  const listen = server.listen
  server.listen = function (port, ...rest) {{
    return listen.call(this, Number(port), '127.0.0.1', ...rest)
  }}
  server.on('request', (request, response) => {{
    response.on('close', () => {{
      const status = response.headersSent ? response.statusCode : null
      fs.appendFileSync(answers, JSON.stringify(
        {{ method: request.method, target: request.url, status,
           test: request.headers['test-id'] ?? null, at: Date.now() }}) + '\\n')
    }})
  }})
  return server
}}
await import({server_url})
"""

# The test definitions as the suite's command-line client loads them.
DEFINITIONS_SCRIPT = """\
const tests = (await import({index_url})).default
tests.push((await import({surrogate_url})).default)
const out = []
for (const suite of tests) {{
  for (const test of suite.tests) {{
    out.push({{ id: test.id, name: test.name, kind: test.kind ?? null,
               browser_only: test.browser_only === true, suite: suite.id }})
  }}
}}
console.log(JSON.stringify(out))
"""

SHIPPED_SCRIPT = """\
console.log(JSON.stringify((await import({index_url})).default))
"""

_LISTENING_APP = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)/")
_LISTENING_SIDECACHE = re.compile(r"sidecache listening on 127\.0\.0\.1:(\d+) \(control")


class Fail(Exception):
    """A setup step failed: the message says which and why."""


# -- the pure part: kinds, scores, 5xx attribution ---------------------------------------


class Kind(Enum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    CHECK = "check"


def kind_of(raw: object) -> Kind:
    """The suite's ``kind``: absent means required (its display.mjs says so)."""
    match raw:
        case None | "required":
            return Kind.REQUIRED
        case "optimal":
            return Kind.OPTIONAL
        case "check":
            return Kind.CHECK
    raise ValueError(f"unknown test kind {raw!r}")


@dataclass(frozen=True, slots=True)
class TestDef:
    id: str
    name: str
    kind: Kind
    suite: str


@dataclass(frozen=True, slots=True)
class Score:
    required: int
    optional: int


def definitions(raw: Iterable[Mapping[str, Any]]) -> dict[str, TestDef]:
    """The tests a proxy runs (browser-only ones left out), by id."""
    return {
        str(t["id"]): TestDef(str(t["id"]), str(t["name"]), kind_of(t["kind"]), str(t["suite"]))
        for t in raw
        if not t["browser_only"]
    }


def totals(defs: Mapping[str, TestDef]) -> Score:
    kinds = [d.kind for d in defs.values()]
    return Score(kinds.count(Kind.REQUIRED), kinds.count(Kind.OPTIONAL))


def passed(results: Mapping[str, object], defs: Mapping[str, TestDef], kind: Kind) -> int:
    return sum(1 for i, d in defs.items() if d.kind is kind and results.get(i) is True)


def score(results: Mapping[str, object], defs: Mapping[str, TestDef]) -> Score:
    """Tests whose result is exactly ``true``; a test missing from ``results`` failed."""
    return Score(passed(results, defs, Kind.REQUIRED), passed(results, defs, Kind.OPTIONAL))


def failing(
    results: Mapping[str, object], defs: Mapping[str, TestDef], kind: Kind
) -> list[tuple[TestDef, object]]:
    """The tests of ``kind`` that did not pass, in the suite's order, with their result."""
    return [
        (d, results.get(i))
        for i, d in defs.items()
        if d.kind is kind and results.get(i) is not True
    ]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the suite's server answered: ``status`` None when it hung up instead."""

    method: str
    path: str
    status: int | None


@dataclass(frozen=True, slots=True)
class Served:
    """One line of sidecache's access log."""

    method: str
    path: str
    status: int
    cache: str


class Origin5xx(Enum):
    RELAYED = "relayed"  # the app answered that status for that path
    DROPPED = "dropped"  # the app closed without answering; the gateway said 502/504
    OWN = "own"  # sidecache's own: the app never answered that status there


def attribute_5xx(served: Served, answers: Sequence[Answer]) -> Origin5xx:
    """Who a 5xx answer came from, judged by what the app answered for its path."""
    statuses = {a.status for a in answers if a.path == served.path}
    if served.status in statuses:
        return Origin5xx.RELAYED
    if None in statuses and served.status in (502, 504):
        return Origin5xx.DROPPED
    return Origin5xx.OWN


def sidecache_5xx(
    served: Sequence[Served], answers: Sequence[Answer]
) -> dict[Origin5xx, list[Served]]:
    out: dict[Origin5xx, list[Served]] = {o: [] for o in Origin5xx}
    for s in served:
        if s.status >= 500:
            out[attribute_5xx(s, answers)].append(s)
    return out


def parse_answers(text: str) -> list[Answer]:
    out = []
    for line in text.splitlines():
        if line.strip():
            a = json.loads(line)
            out.append(Answer(str(a["method"]), str(a["target"]).partition("?")[0], a["status"]))
    return out


def parse_access_log(text: str) -> list[Served]:
    """The access-log lines of sidecache's stderr: one JSON object each, alone on its
    line (other log lines start with their time)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
            out.append(Served(str(r["method"]), str(r["path"]), int(r["status"]), str(r["cache"])))
        except (ValueError, KeyError, TypeError):
            continue  # not an access line
    return out


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    score: Score
    ours: bool = False


def table(rows: Sequence[Row], total: Score) -> str:
    """A Markdown table, best required figure first (ties: optional)."""
    lines = ["| cache | required | optional |", "|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r.score.required, -r.score.optional, r.name)):
        name = f"**{r.name}**" if r.ours else r.name
        lines.append(
            f"| {name} | {r.score.required}/{total.required} "
            f"| {r.score.optional}/{total.optional} |"
        )
    return "\n".join(lines)


def describe(result: object) -> str:
    """A failing result as one line: the suite's ``[kind, message]``, or what it was."""
    if result is None:
        return "not run"
    if isinstance(result, list) and len(result) == 2:
        return f"{result[0]}: {result[1]}"
    return json.dumps(result)


# -- the suite: installed once per version ------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sidecache" / f"{SUITE}-{SUITE_VERSION}"


def installed(prefix: Path) -> Path | None:
    package = prefix / "node_modules" / SUITE
    try:
        version = json.loads((package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return package if version == SUITE_VERSION else None


def install_suite(fresh: bool, tmp: Path) -> Path:
    """The suite's package folder: from the cache, else installed there (or in ``tmp``)."""
    target = tmp / "suite" if fresh else cache_dir()
    package = installed(target)
    if package is not None:
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise Fail(
            "npm is not installed: the conformance suite is an npm package "
            "(Debian: apt-get install npm)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # A package.json of its own, so that npm installs here and not in a parent project.
        (staging / "package.json").write_text(
            '{"name": "sidecache-conformance", "private": true}\n'
        )
        print(f"installing {SUITE}@{SUITE_VERSION} into {target} ...", file=sys.stderr, flush=True)
        cmd = [
            npm,
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--no-package-lock",
            "--ignore-scripts",
            "--loglevel=error",
            f"{SUITE}@{SUITE_VERSION}",
        ]
        try:
            done = subprocess.run(
                cmd,
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                env=_clean_env(),
            )
        except subprocess.TimeoutExpired:
            raise Fail(
                f"npm install {SUITE}@{SUITE_VERSION} took over {INSTALL_TIMEOUT_S:.0f}s"
            ) from None
        if done.returncode != 0 or installed(staging) is None:
            raise Fail(f"npm install {SUITE}@{SUITE_VERSION} failed:\n{_tail(done.stderr)}")
        if installed(target) is None:  # another run may have finished first
            shutil.rmtree(target, ignore_errors=True)  # an unfinished or older copy
            with contextlib.suppress(OSError):
                os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    package = installed(target)
    if package is None:
        raise Fail(f"{target} does not hold {SUITE}@{SUITE_VERSION}")
    return package


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without npm's per-run settings (the suite reads its own from them)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().startswith(("npm_config_", "npm_package_"))
    }
    env.update(extra)
    return env


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def node_json(package: Path, script: str) -> Any:
    node = _node()
    try:
        done = subprocess.run(
            [node, "--no-warnings", "--input-type=module", "-e", script],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            env=_clean_env(),
        )
    except subprocess.TimeoutExpired:
        raise Fail(f"node did not read the suite within {NODE_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        raise Fail(f"node could not read the suite:\n{_tail(done.stderr)}")
    return json.loads(done.stdout)


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise Fail(
            "node is not installed: the conformance suite runs on Node.js "
            "(Debian: apt-get install nodejs npm)"
        )
    return node


def load_definitions(package: Path) -> dict[str, TestDef]:
    tests = package / "tests"
    script = DEFINITIONS_SCRIPT.format(
        index_url=json.dumps((tests / "index.mjs").as_uri()),
        surrogate_url=json.dumps((tests / "surrogate-control.mjs").as_uri()),
    )
    return definitions(node_json(package, script))


def load_shipped(package: Path, defs: Mapping[str, TestDef]) -> list[Row]:
    """The proxies and CDNs whose results the package ships (browsers left out)."""
    index = node_json(
        package,
        SHIPPED_SCRIPT.format(index_url=json.dumps((package / "results" / "index.mjs").as_uri())),
    )
    rows = []
    for item in index:
        if item.get("type") == "browser":
            continue
        results = json.loads((package / "results" / item["file"]).read_text())
        rows.append(Row(f"{item['name']} {item.get('version', '')}".strip(), score(results, defs)))
    return rows


# -- the processes ----------------------------------------------------------------------


@contextlib.contextmanager
def started(cmd: Sequence[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, its output in ``log``; stopped (group and all) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(proc: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str], what: str) -> int:
    """The port ``pattern`` finds in ``log``, once the process has written it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        text = log.read_text(errors="replace")
        m = pattern.search(text)
        if m is not None:
            return int(m.group(1))
        if proc.poll() is not None:
            raise Fail(f"{what} exited with status {proc.returncode}:\n{_tail(text)}")
        if time.monotonic() > deadline:
            raise Fail(f"{what} did not start within {START_TIMEOUT_S:.0f}s:\n{_tail(text)}")
        time.sleep(0.05)


def app_command(package: Path, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """How to start the suite's server: through the loopback wrapper, on a port of its choosing."""
    wrapper = tmp / "server.mjs"
    server_url = json.dumps((package / "server" / "server.mjs").as_uri())
    wrapper.write_text(SERVER_WRAPPER.format(server_url=server_url))
    (tmp / "answers.jsonl").touch()
    env = _clean_env(
        npm_config_port="0",
        npm_config_protocol="http",
        npm_config_pidfile=str(tmp / "server.pid"),
        CONFORMANCE_ANSWERS=str(tmp / "answers.jsonl"),
    )
    return [_node(), "--no-warnings", str(wrapper)], env


def sidecache_config(app_port: int, freshness_key: bool, ttl: str | None) -> str:
    lines = []
    if freshness_key:
        lines.append("    freshness: origin\n")
    if ttl is not None:
        lines.append(f"    ttl: {ttl}\n")
    return CONFIG.format(app_port=app_port, route_lines="".join(lines))


def run_suite(
    package: Path, base: str, test_id: str, capture: bool
) -> subprocess.CompletedProcess[str]:
    env = _clean_env(npm_config_base=base, npm_package_config_id=test_id)
    try:
        return subprocess.run(
            [_node(), "--no-warnings", "cli.mjs"],
            cwd=package,
            env=env,
            text=True,
            capture_output=capture,
            timeout=RUN_TIMEOUT_S,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise Fail(f"the suite did not finish within {RUN_TIMEOUT_S:.0f}s") from None


def results_of(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    try:
        results = json.loads(done.stdout)
    except ValueError:
        results = None
    if done.returncode != 0 or not isinstance(results, dict):
        raise Fail(
            f"the suite's client gave no results (status {done.returncode}):\n{_tail(done.stderr)}"
        )
    return results


# -- the command --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.conformance",
        description=f"sidecache through the {SUITE} suite ({SUITE_VERSION}), "
        "beside the proxies it ships results for.",
    )
    p.add_argument(
        "--failures", action="store_true", help="list every failing required and optional test"
    )
    p.add_argument(
        "--json", type=Path, metavar="PATH", help="write our results and figures to PATH"
    )
    p.add_argument(
        "--floor",
        type=Path,
        metavar="PATH",
        help="read --min-required and --min-optional from this JSON file "
        f"(CI: {FLOOR.relative_to(ROOT)})",
    )
    p.add_argument(
        "--min-required", type=int, metavar="N", help="exit 1 below N required tests passed"
    )
    p.add_argument(
        "--min-optional", type=int, metavar="M", help="exit 1 below M optional tests passed"
    )
    p.add_argument(
        "--no-own-5xx", action="store_true", help="exit 1 if sidecache answered any 5xx of its own"
    )
    p.add_argument(
        "--id",
        default="",
        metavar="TEST",
        help="run one test and show its requests and responses (no table)",
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="run the suite against its server directly, without sidecache (no cache at all)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help=f"install the suite into a temporary folder instead of {cache_dir()}",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's folder (config, logs) and print its path",
    )
    p.add_argument(
        "--no-freshness-key",
        action="store_true",
        help="leave `freshness: origin` out of the route "
        "(to measure code from before the key existed; add --ttl 5m there)",
    )
    p.add_argument(
        "--ttl",
        metavar="DURATION",
        help="add `ttl: DURATION` to the route (its default lifetime)",
    )
    return p.parse_args(argv)


def floor_of(args: argparse.Namespace) -> Score:
    """The figures to reach: the options, else the floor file's. A floor file with
    ``"no_own_5xx": true`` also turns on --no-own-5xx."""
    required, optional = args.min_required, args.min_optional
    if args.floor is not None:
        try:
            data = json.loads(args.floor.read_text())
            required = int(data["required"]) if required is None else required
            optional = int(data["optional"]) if optional is None else optional
            args.no_own_5xx = args.no_own_5xx or data.get("no_own_5xx") is True
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Fail(
                f"{args.floor}: not a floor ({exc!r}); expected "
                '{"required": N, "optional": M, "no_own_5xx": false}'
            ) from None
    return Score(required or 0, optional or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except Fail as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    floor = floor_of(args)
    tmp_dir = tempfile.mkdtemp(prefix="sidecache-conformance-")
    tmp = Path(tmp_dir)
    try:
        return measure(args, floor, tmp)
    finally:
        if args.keep:
            print(f"run folder kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, floor: Score, tmp: Path) -> int:
    package = install_suite(args.fresh, tmp)
    defs = load_definitions(package)
    if args.id and args.id not in defs:
        raise Fail(f"no test {args.id!r} runs against a proxy in {SUITE} {SUITE_VERSION}")
    config_text = ""
    with contextlib.ExitStack() as stack:
        cmd, env = app_command(package, tmp)
        # The server serves files from its working directory: the package, as npm runs it.
        app = stack.enter_context(started(cmd, tmp / "app.log", cwd=package, env=env))
        app_port = wait_for(app, tmp / "app.log", _LISTENING_APP, "the suite's server")
        base = f"http://127.0.0.1:{app_port}"
        proxy = None
        if not args.direct:
            config_text = sidecache_config(app_port, not args.no_freshness_key, args.ttl)
            config = tmp / "sidecache.yaml"
            config.write_text(config_text)
            log = tmp / "sidecache.log"
            serve = [sys.executable, "-m", "proxy", "serve", "-c", str(config)]
            proxy = stack.enter_context(started(serve, log, cwd=ROOT))
            try:
                base = f"http://127.0.0.1:{wait_for(proxy, log, _LISTENING_SIDECACHE, 'sidecache')}"
            except Fail as exc:
                if "freshness" in str(exc) and not args.no_freshness_key:
                    raise Fail(
                        f"{exc}\n(this sidecache does not know the route key `freshness`: "
                        "run with --no-freshness-key --ttl 5m)"
                    ) from None
                raise
        done = run_suite(package, base, args.id, capture=not args.id)
        if args.id:
            return done.returncode
        results = results_of(done)
        if proxy is not None:
            stop(proxy)  # its access log is complete once it has exited
    served = parse_access_log(_read(tmp / "sidecache.log"))
    answers = parse_answers(_read(tmp / "answers.jsonl"))
    return report(args, defs, floor, results, served, answers, config_text, package)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def report(
    args: argparse.Namespace,
    defs: Mapping[str, TestDef],
    floor: Score,
    results: Mapping[str, object],
    served: Sequence[Served],
    answers: Sequence[Answer],
    config_text: str,
    package: Path,
) -> int:
    total, ours = totals(defs), score(results, defs)
    name = "no cache (the suite's server directly)" if args.direct else "sidecache"
    rows = [Row(name, ours, ours=True), *load_shipped(package, defs)]
    print(
        f"{SUITE} {SUITE_VERSION}: {total.required} required and {total.optional} optional tests "
        "(check and browser-only tests not counted; a test passes when its result is true)\n"
    )
    print(table(rows, total))
    fives = sidecache_5xx(served, answers)
    if not args.direct:
        print(
            f"\nsidecache's own 5xx answers: {len(fives[Origin5xx.OWN])}; 502/504 for requests "
            f"the app dropped without answering: {len(fives[Origin5xx.DROPPED])}; app 5xx relayed: "
            f"{len(fives[Origin5xx.RELAYED])}"
        )
        for s in fives[Origin5xx.OWN]:
            print(f"  own {s.status}: {s.method} {s.path} ({s.cache or '-'})")
    if args.failures:
        for kind in (Kind.REQUIRED, Kind.OPTIONAL):
            fails = failing(results, defs, kind)
            print(f"\nfailing {kind.value} tests ({len(fails)}):")
            for d, result in fails:
                print(f"  {d.id}: {d.name}\n      {describe(result)}")
    if args.json is not None:
        failures = {
            k.value: [
                {"id": d.id, "name": d.name, "suite": d.suite, "result": r}
                for d, r in failing(results, defs, k)
            ]
            for k in (Kind.REQUIRED, Kind.OPTIONAL)
        }
        data = {
            "suite": {"package": SUITE, "version": SUITE_VERSION},
            "target": name,
            "config": config_text,
            "passed": asdict(ours),
            "total": asdict(total),
            "failures": failures,
            "own_5xx": [asdict(s) for s in fives[Origin5xx.OWN]],
            "dropped_5xx": [asdict(s) for s in fives[Origin5xx.DROPPED]],
            "shipped": {r.name: asdict(r.score) for r in rows if not r.ours},
            "results": results,
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    status = 0
    if ours.required < floor.required or ours.optional < floor.optional:
        print(
            f"\nbelow the floor: required {ours.required} (floor {floor.required}), "
            f"optional {ours.optional} (floor {floor.optional})",
            file=sys.stderr,
        )
        status = 1
    if args.no_own_5xx and fives[Origin5xx.OWN]:
        print(f"\nsidecache answered {len(fives[Origin5xx.OWN])} 5xx of its own", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
