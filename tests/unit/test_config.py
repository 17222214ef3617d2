"""Configuration loading and validation (proxy/config.py).

Every invalid fixture in ``configs/invalid/`` states on its first line the exact
message it must produce (after the file name), so the messages users see are
pinned down here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    credentials_text,
    format_routes,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    resolve_config_path,
    route_warnings,
    statuses_text,
)

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
INVALID = sorted((HERE / "configs" / "invalid").glob("*.yaml"))
MINIMAL = {"upstream": {"url": "http://127.0.0.1:8000"}}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("2.5s", 2.5),
        (" 10 s ", 10.0),
        ("45", 45.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 mins", "'5 mins' is not a duration (e.g. '30s', '5m')"),
        ("", "'' is not a duration (e.g. '30s', '5m')"),
        ("-1s", "'-1s' is not a duration (e.g. '30s', '5m')"),
        (-1, "-1 is not a duration: it must be 0 or more"),
        (float("inf"), "inf is not a duration: it must be 0 or more"),
        (True, "True is not a duration (e.g. '30s', '5m')"),
        (None, "None is not a duration (e.g. '30s', '5m')"),
        ([1], "[1] is not a duration (e.g. '30s', '5m')"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("100B", 100),
        ("512KiB", 512 * 1024),
        ("64MiB", 64 * 1024**2),
        ("1GiB", 1024**3),
        ("1TiB", 1024**4),
        ("10KB", 10_000),
        ("10MB", 10_000_000),
        ("1GB", 10**9),
        ("1.5MiB", int(1.5 * 1024**2)),
        ("64mib", 64 * 1024**2),
        ("2048", 2048),
    ],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12 megs", "'12 megs' is not a size (e.g. '512KiB', '64MiB', '1GiB')"),
        ("MiB", "'MiB' is not a size (e.g. '512KiB', '64MiB', '1GiB')"),
        (-5, "-5 is not a size: it must be 0 or more"),
        (1.5, "1.5 is not a size (e.g. '512KiB', '64MiB', '1GiB')"),
        (False, "False is not a size (e.g. '512KiB', '64MiB', '1GiB')"),
    ],
)
def test_bad_sizes(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_size(value)


def test_defaults() -> None:
    c = parse_config(MINIMAL, environ={})
    assert (c.listen.host, c.listen.port) == ("0.0.0.0", 8080)
    assert (c.control.listen.host, c.control.listen.port) == ("127.0.0.1", 9090)
    assert c.control.token == ""
    assert c.upstream.url == "http://127.0.0.1:8000"
    assert c.upstream.max_connections == 50
    assert (c.upstream.queue_timeout, c.upstream.connect_timeout, c.upstream.timeout) == (
        10.0,
        2.0,
        30.0,
    )
    assert (c.upstream.read_timeout, c.upstream.stream_timeout) == (15.0, 600.0)
    assert c.upstream.keepalive_timeout == 1.5
    assert c.server.send_timeout == 60.0
    assert (c.cache.max_bytes, c.cache.max_object_bytes) == (1024**3, 16 * 1024**2)
    assert c.routes == ()


def test_route_defaults_and_normalisation() -> None:
    c = parse_config(
        {
            **MINIMAL,
            "routes": [
                {"name": "a", "match": "/a/{id}", "ttl": "5m"},
                {
                    "name": "b",
                    "match": "/b",
                    "ttl": 1,
                    "methods": ["get", "GET"],
                    "query": ["w", "h", "w"],
                    "vary": ["Accept", "accept", "Accept-Language"],
                    "content_types": ["Image/*"],
                    "statuses": [200, 404],
                    "credentials": "per-user",
                    "client_cache_control": "public, max-age=60",
                },
            ],
        },
        environ={},
    )
    a, b = c.routes
    assert a.methods == ("GET", "HEAD") and a.ttl == 300.0
    assert (a.stale_while_revalidate, a.stale_if_error) == (0.0, 0.0)
    # Unset: the mode's defaults (policy.py), origin freshness by default.
    assert a.freshness == "origin" and a.statuses is None and a.credentials is None
    assert a.query == "all" and a.vary == () and a.client_cache_control is None
    assert a.content_types is None
    assert b.methods == ("GET",) and b.query == ("w", "h")
    assert b.vary == ("accept", "accept-language")
    assert b.content_types == ("image/*",) and b.statuses == (200, 404)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        ("127.0.0.1:0", "127.0.0.1", 0),
        (":9000", "0.0.0.0", 9000),
        ("[::1]:8080", "::1", 8080),
        ("localhost:80", "localhost", 80),
    ],
)
def test_addresses(text: str, host: str, port: int) -> None:
    c = parse_config({**MINIMAL, "listen": text}, environ={})
    assert (c.listen.host, c.listen.port) == (host, port)


@pytest.mark.parametrize("text", ["8080", "host:", "host:99999", "[::1", "a:b"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match=r"listen: .* is not an address"):
        parse_config({**MINIMAL, "listen": text}, environ={})


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://app:8000/", "http://app:8000"),
        ("https://app", "https://app"),
    ],
)
def test_upstream_urls(url: str, stored: str) -> None:
    assert parse_config({"upstream": {"url": url}}, environ={}).upstream.url == stored


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${UP}", {"UP": "http://a:1"}, "http://a:1"),
        ("${UP:-http://b:2}", {}, "http://b:2"),
        ("${UP:-http://b:2}", {"UP": ""}, "http://b:2"),
        ("${UP:-http://b:2}", {"UP": "http://c:3"}, "http://c:3"),
        ("http://${HOST}:${PORT:-80}", {"HOST": "h"}, "http://h:80"),
    ],
)
def test_environment_substitution(text: str, environ: dict[str, str], expected: str) -> None:
    assert parse_config({"upstream": {"url": text}}, environ=environ).upstream.url == expected


def test_dollar_dollar_is_a_literal_dollar_and_numbers_can_come_from_variables() -> None:
    c = parse_config(
        {**MINIMAL, "control": {"token": "a$$b${T:-}"}, "listen": "${HOST:-0.0.0.0}:${PORT}"},
        environ={"PORT": "9999"},
    )
    assert c.control.token == "a$b"
    assert c.listen.port == 9999


def test_config_objects_are_frozen() -> None:
    c = parse_config(MINIMAL, environ={})
    with pytest.raises(ValueError, match="frozen"):
        c.listen = c.control.listen  # type: ignore[misc]


@pytest.mark.parametrize("fixture", INVALID, ids=lambda p: p.stem)
def test_invalid_configs_give_their_exact_message(fixture: Path) -> None:
    first = fixture.read_text().splitlines()[0] if fixture.read_text() else ""
    assert first.startswith("# expect: "), f"{fixture.name} must start with '# expect: '"
    expected = f"{fixture}: {first.removeprefix('# expect: ')}"
    with pytest.raises(ConfigError) as info:
        load_config(fixture, environ={})
    assert str(info.value) == expected


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(HERE / "configs" / "nope.yaml", environ={})
    assert (
        str(info.value)
        == f"{HERE / 'configs' / 'nope.yaml'}: cannot read config: No such file or directory"
    )


@pytest.mark.parametrize(
    "path",
    [ROOT / "config" / "sidecache.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_shipped_configs_load(path: Path) -> None:
    assert isinstance(load_config(path, environ={}), Config)


def test_resolve_config_path() -> None:
    assert resolve_config_path("a.yaml", {"SIDECACHE_CONFIG": "b.yaml"}) == "a.yaml"
    assert resolve_config_path(None, {"SIDECACHE_CONFIG": "b.yaml"}) == "b.yaml"
    assert resolve_config_path(None, {}) == DEFAULT_CONFIG_PATH == "config/sidecache.yaml"


@pytest.mark.parametrize("policy", ["gdsf", "lru", "s3fifo", "tinylfu"])
def test_cache_policy_is_one_of_the_four(policy: str) -> None:
    data = {"upstream": {"url": "http://127.0.0.1:8000"}, "cache": {"policy": policy}}
    assert parse_config(data).cache.policy == policy


def test_format_routes_lists_every_route() -> None:
    c = load_config(ROOT / "config" / "examples" / "full.yaml", environ={})
    text = format_routes(c)
    for route in c.routes:
        line = next(line for line in text.splitlines() if line.strip().startswith(route.name))
        assert route.match in line and credentials_text(route) in line
        assert route.freshness in line and statuses_text(route) in line
        assert ",".join(route.methods) in line
    assert "upstream  http://127.0.0.1:8000" in text
    assert "token not set" in text
    assert f"policy {c.cache.policy})" in text and c.cache.policy == "gdsf"
    assert "[w,h]" in text and "5m" in text and "10m" in text and "1h" in text


@pytest.mark.parametrize(
    ("listen", "token"),
    [("127.0.0.1:9090", ""), ("[::1]:9090", ""), ("localhost:9090", ""), ("0.0.0.0:9090", "t")],
)
def test_the_control_port_is_exposed_only_with_a_token(listen: str, token: str) -> None:
    c = parse_config({**MINIMAL, "control": {"listen": listen, "token": token}}, environ={})
    assert c.control.token == token


def test_the_shared_tier_is_absent_unless_configured() -> None:
    assert parse_config(MINIMAL, environ={}).cache.shared is None
    c = parse_config(
        {**MINIMAL, "cache": {"shared": {"url": "redis://127.0.0.1:6379/2", "timeout": "100ms"}}},
        environ={},
    )
    shared = c.cache.shared
    assert shared is not None
    assert (shared.backend, shared.namespace, shared.timeout) == ("redis", "sidecache", 0.1)
    assert (shared.lock_timeout, shared.breaker_failures, shared.breaker_reset) == (10.0, 5, 30.0)


@pytest.mark.parametrize(
    ("listen", "token", "effective"),
    [
        ("127.0.0.1:9090", " s3cret ", "s3cret"),
        ("127.0.0.1:9090", "s3cret\n", "s3cret"),
        ("0.0.0.0:9090", "\ts3cret ", "s3cret"),
        ("127.0.0.1:9090", "   ", ""),  # loopback needs no token: blank is none
    ],
)
def test_the_control_token_is_stripped(listen: str, token: str, effective: str) -> None:
    c = parse_config({**MINIMAL, "control": {"listen": listen, "token": token}}, environ={})
    assert c.control.token == effective


@pytest.mark.parametrize("token", [" ", "\n", " \t "])
def test_a_blank_token_does_not_expose_the_control_port(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "control": {"listen": "0.0.0.0:9090", "token": token}}, environ={})
    assert str(info.value) == (
        f"<config>: control.token: {token!r} is only whitespace: "
        "set a real token to expose the control port"
    )


def test_allowed_hosts_are_normalised_and_empty_by_default() -> None:
    assert parse_config(MINIMAL).server.allowed_hosts == ()
    config = parse_config(
        {**MINIMAL, "server": {"allowed_hosts": ["Photos.Example.", "*.CDN.example", "*", "[::1]"]}}
    )
    assert config.server.allowed_hosts == ("photos.example", "*.cdn.example", "*", "[::1]")


def test_a_config_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text('upstream: {url: "http://127.0.0.1:8000"}\nx: ' + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: the config is nested too deeply"


@pytest.mark.parametrize(
    ("listen", "control", "clash"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080", True),
        ("0.0.0.0:8080", "127.0.0.1:8080", True),
        ("127.0.0.1:8080", "0.0.0.0:8080", True),
        ("[::]:8080", "127.0.0.1:8080", True),
        ("localhost:8080", "127.0.0.1:8080", True),
        ("[::1]:8080", "localhost:8080", True),
        ("0.0.0.0:8080", "[::1]:8080", False),  # another address family
        ("127.0.0.1:8080", "127.0.0.2:8080", False),
        ("0.0.0.0:8080", "127.0.0.1:9090", False),
        ("127.0.0.1:0", "127.0.0.1:0", False),  # the OS picks two ports
    ],
)
def test_the_control_port_must_not_share_the_public_socket(
    listen: str, control: str, clash: bool
) -> None:
    data = {**MINIMAL, "listen": listen, "control": {"listen": control, "token": "t"}}
    if not clash:
        assert str(parse_config(data, environ={}).control.listen) == control
        return
    with pytest.raises(ConfigError, match=r"^<config>: control\.listen: .* overlaps listen "):
        parse_config(data, environ={})


def test_listen_hosts_that_are_addresses_or_localhost_need_no_lookup(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        'listen: "[::1]:8080"\nupstream: {url: "http://127.0.0.1:8000"}\n'
        "control: {listen: localhost:9090}\n"
    )
    config = load_config(path, environ={})
    assert (config.listen.host, config.control.listen.host) == ("::1", "localhost")


def test_route_warnings_name_the_route_that_never_applies_and_the_one_that_hides_it() -> None:
    routes = [
        {"name": "api", "match": "/api/{rest:path}", "ttl": "1m"},
        {"name": "photo", "match": "/api/photo/{id}", "ttl": "5m"},
        {"name": "files", "match": "/files/{id}", "ttl": "5m"},
        {"name": "files-again", "match": "/files/{name}", "ttl": "5m"},
    ]
    config = parse_config({**MINIMAL, "routes": routes}, environ={})
    assert route_warnings(config) == [
        "routes[1] 'photo' (/api/photo/{id}) never applies: every path it matches is matched "
        "first by routes[0] 'api' (/api/{rest:path})",
        "routes[3] 'files-again' (/files/{name}) never applies: every path it matches is "
        "matched first by routes[2] 'files' (/files/{id})",
    ]
    assert route_warnings(parse_config(MINIMAL, environ={})) == []


def test_a_reload_does_not_look_listen_host_names_up() -> None:
    path = HERE / "configs" / "invalid" / "listen_unresolvable.yaml"
    with pytest.raises(ConfigError, match="does not resolve"):
        load_config(path, environ={})
    # A reload (on the event loop) skips the lookup: listen changes need a restart.
    assert load_config(path, environ={}, resolve_hosts=False).listen.host.endswith(".invalid")


@pytest.mark.parametrize(
    ("value", "seconds"), [("500ms", 0.5), ("4s", 4.0), (2, 2.0), ("1m", 60.0)]
)
def test_upstream_keepalive_timeout_is_a_duration(value: object, seconds: float) -> None:
    data = {"upstream": {"url": "http://127.0.0.1:8000", "keepalive_timeout": value}}
    assert parse_config(data, environ={}).upstream.keepalive_timeout == seconds


def test_trusted_proxies_default_to_loopback_and_private_ranges() -> None:
    assert [str(n) for n in parse_config(MINIMAL).server.trusted_proxies] == [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    given = {**MINIMAL, "server": {"trusted_proxies": ["203.0.113.7", " 2001:db8::/32"]}}
    assert [str(n) for n in parse_config(given).server.trusted_proxies] == [
        "203.0.113.7/32",
        "2001:db8::/32",
    ]
    assert parse_config({**MINIMAL, "server": {"trusted_proxies": []}}).server.trusted_proxies == ()


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "example.com", "10.0.0", 7])
def test_a_trusted_proxy_that_is_no_address_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "server": {"trusted_proxies": ["10.0.0.0/8", bad]}}, environ={})
    assert str(info.value) == (
        f"<config>: server.trusted_proxies[1]: {bad!r} is not an IP address or CIDR range "
        "(e.g. '10.0.0.0/8', '::1')"
    )


def test_one_worker_by_default() -> None:
    assert parse_config(MINIMAL, environ={}).server.workers == 1


@pytest.mark.parametrize("value", [2, 16])
def test_workers_take_a_whole_number(value: int) -> None:
    config = parse_config({**MINIMAL, "server": {"workers": value}}, environ={})
    assert config.server.workers == value
    assert f"({value} worker processes)" in format_routes(config)


@pytest.mark.parametrize("value", [0, -1, True, 2.5, 2.0, "2", "many", None])
def test_workers_refuse_anything_but_a_whole_number_of_1_or_more(value: object) -> None:
    expected = r"^<config>: server\.workers: .* is not a number of worker processes: a whole"
    with pytest.raises(ConfigError, match=expected + r" number, 1 or more$"):
        parse_config({**MINIMAL, "server": {"workers": value}}, environ={})


def test_the_top_level_mode_is_every_route_s_unless_it_sets_its_own() -> None:
    routes = [
        {"name": "a", "match": "/a/{id}"},
        {"name": "b", "match": "/b/{id}", "mode": "cache"},
    ]
    c = parse_config({**MINIMAL, "mode": "shadow", "routes": routes}, environ={})
    assert c.mode == "shadow"
    assert [r.mode for r in c.routes] == ["shadow", "cache"]
    plain = parse_config({**MINIMAL, "routes": routes[:1]}, environ={})
    assert plain.mode == "cache" and plain.routes[0].mode == "cache"
    assert " shadow " in format_routes(c).splitlines()[-2]
