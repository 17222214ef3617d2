"""The hit benchmark's pure helpers (bench/run.py, bench/rawserver.py): sizes, the
wrk script, wrk's report, the tables and the raw server's request splitting."""

from __future__ import annotations

import pytest

from bench.rawserver import response, split_requests
from bench.run import (
    Result,
    markdown,
    median_result,
    object_paths,
    parse_size,
    parse_wrk,
    pinned,
    size_label,
    wrk_script,
)
from bench.upstream import object_body

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:40000
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    25.01ms    4.12ms  61.20ms   80.00%
    Req/Sec   640.00     30.00   700.00     70.00%
  Latency Distribution
     50%   24.50ms
     75%   27.00ms
     90%   30.10ms
     99%    1.20s
  1920 requests in 3.00s, 4.69GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:    639.50
Transfer/sec:      1.56GB
"""


@pytest.mark.parametrize(
    ("text", "size", "label"),
    [
        ("8KB", 8192, "8KB"),
        ("64kb", 65536, "64KB"),
        ("2.5MB", 2_621_440, "2.5MB"),
        ("100B", 100, "100B"),
    ],
)
def test_sizes_parse_in_binary_units_and_label_back(text: str, size: int, label: str) -> None:
    assert parse_size(text) == size
    assert size_label(size) == label


@pytest.mark.parametrize("text", ["8", "8 GB", "0KB", "17MB", "big"])
def test_sizes_out_of_range_or_malformed_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_wrk_script_goes_round_robin_over_every_path() -> None:
    paths = object_paths(8192, 3)
    assert paths == ["/bytes/8192/0", "/bytes/8192/1", "/bytes/8192/2"]
    script = wrk_script(paths)
    assert 'local paths = {"/bytes/8192/0", "/bytes/8192/1", "/bytes/8192/2"}' in script
    assert "i = i % #paths + 1" in script
    assert 'wrk.format("GET", paths[i])' in script


def test_wrk_report_parses_rate_percentiles_transfer_and_errors() -> None:
    r = parse_wrk(WRK_OUTPUT, "nginx", "2.5MB", 16, 3)
    assert r.requests_per_s == 639.5
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == (24.5, 30.1, 1200.0)
    assert round(r.transfer_mb_per_s) == round(1.56 * 1024**3 / 1e6)
    assert r.errors == 6


def test_wrk_report_without_a_rate_is_an_error() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", "raw", "8KB", 1, 1)


def test_ratios_table_compares_sidecache_to_nginx_and_raw() -> None:
    def result(target: str, rps: float, p99: float) -> Result:
        return Result(target, "8KB", 32, 3, rps, 0.0, 0.1, 0.2, p99, 0)

    table = markdown(
        [result("nginx", 1000, 2.0), result("sidecache", 500, 4.0), result("raw", 2000, 1.0)],
        "header",
    )
    assert "| 8KB | 0.50x | 0.25x | 2.00x |" in table
    assert table.startswith("header\n")


def test_servers_are_pinned_with_taskset_only_when_asked() -> None:
    assert pinned(["wrk", "x"], 1) == ["taskset", "-c", "1", "wrk", "x"]
    assert pinned(["wrk", "x"], None) == ["wrk", "x"]


def test_raw_server_splits_pipelined_requests_and_keeps_the_partial_one() -> None:
    buffer = (
        b"GET /bytes/8192/0 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes/8192/1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes/81"
    )
    paths, rest = split_requests(buffer)
    assert paths == [b"/bytes/8192/0", b"/bytes/8192/1"]
    assert rest == b"GET /bytes/81"
    assert split_requests(rest + b"92/2 HTTP/1.1\r\n\r\n") == ([b"/bytes/8192/2"], b"")


def test_raw_server_response_is_a_hit_with_the_upstream_bytes() -> None:
    body = object_body(8192, "3")
    raw = response(body)
    head, _, sent = raw.partition(b"\r\n\r\n")
    assert sent == body and len(body) == 8192
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 8192" in head and b"\r\nX-Cache: HIT" in head


def test_a_median_result_takes_each_figure_from_the_middle_round() -> None:
    rounds = [
        Result("sidecache", "8KB", 32, 10, 50_000.0, 400.0, 0.5, 0.6, 1.2, 0),
        Result("sidecache", "8KB", 32, 10, 30_000.0, 250.0, 0.9, 1.1, 9.0, 2),
        Result("sidecache", "8KB", 32, 10, 52_000.0, 420.0, 0.4, 0.7, 1.0, 1),
    ]
    m = median_result(rounds)
    assert (m.target, m.size, m.connections, m.duration_s) == ("sidecache", "8KB", 32, 10)
    assert (m.requests_per_s, m.transfer_mb_per_s) == (50_000.0, 400.0)
    assert (m.p50_ms, m.p90_ms, m.p99_ms) == (0.5, 0.7, 1.2)  # the slow round decides nothing
    assert m.errors == 3  # errors are never averaged away
    with pytest.raises(ValueError, match="no rounds"):
        median_result([])
