"""Configuration: YAML -> environment substitution -> validated, frozen objects.

Owns the schema of SPEC "Configuration (YAML)", the duration and size syntaxes,
``${VAR}`` / ``${VAR:-default}`` substitution and ``ConfigError``, whose message
names the file, the key path (``routes[1].ttl``), the value and what was
expected. Validation is pydantic's; its errors are translated here, once.
Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from proxy.budget import DEFAULT_POLICY, PolicyName
from proxy.keys import IPNetwork, normalise_host
from proxy.memfit import (
    Machine,
    MemoryPlan,
    is_percentage,
    mib,
    parse_percentage,
    plan_memory,
    share_of,
)
from proxy.routes import TemplateError, compile_template, shadowed

DEFAULT_CONFIG_PATH = "config/sidecache.yaml"


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is the one-line message for the user."""


# -- scalar syntaxes -----------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (e.g. '30s', '5m')")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration: it must be 0 or more")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (e.g. '30s', '5m')")


def parse_size(value: object) -> int:
    """Bytes from ``1024``, ``"512KiB"``, ``"64MiB"``, ``"1GiB"``, ``"10MB"`` (powers of 1000)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (e.g. '512KiB', '64MiB', '1GiB')")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size: it must be 0 or more")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "b").lower()
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"{value!r} is not a size (e.g. '512KiB', '64MiB', '1GiB')")


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("sidecache", str(exc)) from None


def _size(value: object) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise PydanticCustomError("sidecache", str(exc)) from None


Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(_size), Field(gt=0)]


def _fail(value: object, expected: str) -> PydanticCustomError:
    return PydanticCustomError(
        "sidecache", "{value} {expected}", {"value": repr(value), "expected": expected}
    )


# -- the schema ------------------------------------------------------------------------

_FROZEN = ConfigDict(frozen=True, extra="forbid", strict=False)
# ``cache``: store and serve; ``shadow``: forward everything, and count what
# caching would have saved (``proxy.shadow``).
Mode = Literal["cache", "shadow"]
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ROUTE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MEDIA_RANGE = re.compile(r"^[a-z0-9!#$&^_.+-]+/(\*|[a-z0-9!#$&^_.+-]+)$")


class Address(BaseModel):
    model_config = _FROZEN
    host: str
    port: int

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if isinstance(value, Address | dict):
            return value
        if not isinstance(value, str):
            raise _fail(value, "is not an address (e.g. '0.0.0.0:8080', '127.0.0.1:9090')")
        text = value.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
        else:
            host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535 or "[" in host or "]" in host:
            raise _fail(value, "is not an address (e.g. '0.0.0.0:8080', '127.0.0.1:9090')")
        return {"host": host or "0.0.0.0", "port": int(port)}

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class UpstreamConfig(BaseModel):
    model_config = _FROZEN
    url: str
    max_connections: int = Field(50, ge=1)
    queue_timeout: PositiveDuration = 10.0
    connect_timeout: PositiveDuration = 2.0
    timeout: PositiveDuration = 30.0
    # Longest silence between two reads of a response: a stalled body fails
    # after this, not after the whole ``timeout``.
    read_timeout: PositiveDuration = 15.0
    # A pass-through body relayed to a client may hold its upstream slot this long
    # after the response head, at most (a slow client's download is cut then).
    stream_timeout: PositiveDuration = 600.0
    # An idle pooled connection is not reused after this (nor after the app's
    # ``Keep-Alive: timeout`` less a margin): below gunicorn's 2 s, the shortest
    # idle time of the common app servers, so that the app does not close it first.
    keepalive_timeout: PositiveDuration = 1.5
    # WebSocket tunnels open at once (``proxy.tunnel``): each holds two sockets, not
    # an admission slot; one more is refused with 503.
    max_tunnels: int = Field(1000, ge=1)

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: object) -> str:
        expected = "is not an upstream URL (e.g. 'http://127.0.0.1:8000')"
        if not isinstance(value, str):
            raise _fail(value, expected)
        try:
            parts = urlsplit(value.strip())
            _ = parts.port
        except ValueError:
            raise _fail(value, expected) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _fail(value, expected)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise _fail(value, "must be scheme://host[:port] only, without a path or query")
        return f"{parts.scheme}://{parts.netloc}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ControlConfig(BaseModel):
    model_config = _FROZEN
    listen: Address = Address(host="127.0.0.1", port=9090)
    token: str = ""

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, value: object, info: ValidationInfo) -> object:
        # Clients' tokens arrive stripped (a header value has no edges): a
        # configured one with spaces or a newline around it could never match.
        if not isinstance(value, str):
            return value
        token = value.strip()
        listen = info.data.get("listen")
        if value and not token and isinstance(listen, Address) and not is_loopback(listen.host):
            raise _fail(value, "is only whitespace: set a real token to expose the control port")
        return token

    @model_validator(mode="after")
    def _exposed_needs_a_token(self) -> ControlConfig:
        # Purge and stats on a reachable port without a token would let anyone
        # empty the cache (and hammer the app): refuse to start that way.
        if not is_loopback(self.listen.host) and not self.token:
            raise PydanticCustomError(
                "sidecache_at",
                "{value} is not a loopback address: set control.token to expose the control port",
                {"value": repr(str(self.listen)), "loc": "listen"},
            )
        return self


class SharedConfig(BaseModel):
    """The shared second tier (``cache.shared``): absent, sidecache is single-tier."""

    model_config = _FROZEN
    backend: Literal["redis"] = "redis"
    url: str
    namespace: str = "sidecache"
    timeout: PositiveDuration = 0.25  # per operation; a slow tier costs at most this
    lock_timeout: PositiveDuration = 10.0  # lease of a cluster-wide fill lock
    breaker_failures: int = Field(5, ge=1)  # consecutive failures that open the breaker
    breaker_reset: PositiveDuration = 30.0  # then one trial call after this long

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise _fail(value, "is not a Redis URL (e.g. 'redis://127.0.0.1:6379/0')")
        return value


def _machine(info: ValidationInfo) -> Machine:
    """The machine a percentage of memory is resolved against: the one given to
    ``parse_config``, else this one, read once per config."""
    context = info.context
    if isinstance(context, dict) and callable(context.get("machine")):
        machine = context["machine"]()
        assert isinstance(machine, Machine)
        return machine
    from proxy.machine import read_machine

    return read_machine()


def _memory_base(value: str, info: ValidationInfo) -> tuple[int, str]:
    base = _machine(info).base
    if base is None:
        raise _fail(
            value,
            "cannot be resolved: neither a cgroup memory limit nor the physical memory is "
            "known here; give a size (e.g. '1GiB')",
        )
    return base


def _budget(value: object, info: ValidationInfo) -> int:
    """A size, or a percentage of the cgroup memory limit (else of physical memory)."""
    if not isinstance(value, str) or not is_percentage(value):
        return _size(value)
    try:
        percent = parse_percentage(value)
    except ValueError as exc:
        raise PydanticCustomError("sidecache", str(exc)) from None
    return share_of(_memory_base(value, info)[0], percent)


class CacheConfig(BaseModel):
    model_config = _FROZEN
    max_bytes: Annotated[int, BeforeValidator(_budget), Field(gt=0)] = 1024**3
    max_object_bytes: Size = 16 * 1024**2
    # Eviction and admission of the in-memory tier (``proxy.budget``); read at start.
    policy: PolicyName = DEFAULT_POLICY
    shared: SharedConfig | None = None
    # The shadow index's own memory (its records without bodies, ``proxy.shadow``).
    shadow_index_bytes: Size = 64 * 1024**2
    # Start even if the budget, the processes and the fills in flight may need
    # more than the cgroup memory limit (``proxy.memfit``).
    allow_overcommit: bool = False
    # ``max_bytes`` as written when it is a percentage: "60% of the cgroup memory
    # limit (1024MiB)", for ``sidecache check`` and the log.
    _max_bytes_from: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_percentage(
        cls, data: object, handler: ModelWrapValidatorHandler[CacheConfig], info: ValidationInfo
    ) -> CacheConfig:
        cache = handler(data)
        raw = data.get("max_bytes") if isinstance(data, dict) else None
        if isinstance(raw, str) and is_percentage(raw):
            size, name = _memory_base(raw, info)
            cache._max_bytes_from = f"{''.join(raw.split())} of {name} ({mib(size)})"
        return cache

    @property
    def max_bytes_from(self) -> str | None:
        return self._max_bytes_from

    @model_validator(mode="after")
    def _object_fits(self) -> CacheConfig:
        if self.max_object_bytes > self.max_bytes:
            raise PydanticCustomError(
                "sidecache_at",
                "{value} must not exceed cache.max_bytes ({limit})",
                {
                    "value": self.max_object_bytes,
                    "limit": self.max_bytes,
                    "loc": "max_object_bytes",
                },
            )
        return self


class RouteConfig(BaseModel):
    model_config = _FROZEN
    name: str
    match: str
    methods: tuple[str, ...] = ("GET", "HEAD")
    # ``origin``: the app's headers decide freshness (RFC 9111), ``ttl`` is the
    # lifetime when they give none; ``route``: ``ttl`` decides, whatever they say.
    freshness: Literal["origin", "route"] = "origin"
    # Unset: the top-level ``mode`` (``Config._routes_take_the_mode``).
    mode: Mode = "cache"
    ttl: PositiveDuration | None = None
    stale_while_revalidate: Duration = 0.0
    stale_if_error: Duration = 0.0
    # None: the mode's default (``route``: [200]; ``origin``: any status with
    # explicit freshness, and the heuristically cacheable ones without).
    statuses: tuple[Annotated[int, Field(ge=200, le=599)], ...] | None = None

    @field_validator("statuses")
    @classmethod
    def _storable_statuses(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        for status in value or ():
            if status in (206, 304):
                # A partial or a not-modified answer is not a whole representation.
                raise _fail(status, "cannot be stored (206 and 304 are not whole responses)")
        return value

    query: Literal["all", "ignore"] | tuple[str, ...] = "all"
    vary: tuple[str, ...] = ()
    # None: the mode's default (``route``: bypass; ``origin``: bypass for
    # ``Cookie``, RFC 9111 section 3.5 for ``Authorization``).
    credentials: Literal["bypass", "per-user", "shared"] | None = None
    client_cache_control: str | None = None
    content_types: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _route_needs_a_ttl(self) -> RouteConfig:
        if self.freshness == "route" and self.ttl is None:
            raise PydanticCustomError(
                "sidecache_at",
                "required with freshness: route (it is then every stored response's "
                "lifetime), e.g. 'ttl: 5m'; or use freshness: origin",
                {"loc": "ttl"},
            )
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.match(value):
            raise _fail(value, "is not a route name (letters, digits, '_', '.', '-')")
        return value

    @field_validator("match")
    @classmethod
    def _match(cls, value: str) -> str:
        try:
            compile_template(value)
        except TemplateError as exc:
            raise PydanticCustomError("sidecache", str(exc)) from None
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: object) -> object:
        if not isinstance(value, list | tuple) or not value:
            raise _fail(value, "is not a list of methods (e.g. [GET, HEAD])")
        out: list[str] = []
        for method in value:
            upper = method.upper() if isinstance(method, str) else method
            if upper not in ("GET", "HEAD"):
                raise _fail(method, "is not a cacheable method (GET or HEAD)")
            if upper not in out:
                out.append(upper)
        return tuple(out)

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            names: list[str] = []
            for name in value:
                if not isinstance(name, str) or not name:
                    raise _fail(name, "is not a query parameter name")
                if name not in names:
                    names.append(name)
            return tuple(names)
        if value not in ("all", "ignore"):
            raise _fail(value, "is not 'all', 'ignore' or a list of parameter names")
        return value

    @field_validator("vary", mode="before")
    @classmethod
    def _vary(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            raise _fail(value, "is not a list of header names")
        out: list[str] = []
        for name in value:
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise _fail(name, "is not a header name")
            if name.lower() not in out:
                out.append(name.lower())
        return tuple(out)

    @field_validator("client_cache_control")
    @classmethod
    def _cache_control(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise _fail(value, "must not contain control characters")
        return value

    @field_validator("content_types", mode="before")
    @classmethod
    def _content_types(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not value:
            raise _fail(value, "is not a list of media types (e.g. [image/*])")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not _MEDIA_RANGE.match(item.strip().lower()):
                raise _fail(item, "is not a media type (e.g. 'image/jpeg' or 'image/*')")
            out.append(item.strip().lower())
        return tuple(out)


def _host_pattern(value: object) -> str:
    expected = "is not a host name without a port (e.g. 'example.com', '*.example.com')"
    if not isinstance(value, str):
        raise _fail(value, expected)
    if value.strip() == "*":
        return "*"
    wildcard = value.strip().startswith("*.")
    name = value.strip()[2:] if wildcard else value
    host = normalise_host(name)
    if host is None or ":" in name.rpartition("]")[2]:
        raise _fail(value, expected)
    return "*." + host if wildcard else host


def _network(value: object) -> IPNetwork:
    expected = "is not an IP address or CIDR range (e.g. '10.0.0.0/8', '::1')"
    if not isinstance(value, str):
        raise _fail(value, expected)
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _fail(value, expected) from None


# Loopback and private ranges: where an ingress or load balancer in front usually is.
DEFAULT_TRUSTED_PROXIES: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _worker_count(value: object) -> int:
    # Not pydantic's lax int: true, 2.0 or "2" would pass as a count.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(value, "is not a number of worker processes: a whole number, 1 or more")
    return value


class ServerConfig(BaseModel):
    """Limits on the clients of the public port, and the shutdown grace period."""

    model_config = _FROZEN
    header_timeout: PositiveDuration = 10.0  # a request's head must arrive within this
    keepalive_timeout: PositiveDuration = 75.0  # idle keep-alive connections are closed
    send_timeout: PositiveDuration = 60.0  # a client that takes no data this long is cut
    max_body_bytes: Size = 64 * 1024**2  # larger request bodies get 413, unread
    shutdown_grace: Duration = 10.0  # in-flight requests may finish within this on stop
    # Refuse to start on an HTTP parser known to be unsafe (aiohttp's pure-Python
    # parser, or a release before the request-smuggling fixes) unless this is set.
    allow_unsafe_http_parser: bool = False
    # Host names the public port answers for (``*.example.com`` for subdomains);
    # empty: every host, each cached apart. Others get 400 before any lookup.
    allowed_hosts: tuple[Annotated[str, BeforeValidator(_host_pattern)], ...] = ()
    # Peers (the TCP peer address) whose X-Forwarded-* and Forwarded are believed:
    # passed on, and keyed on cacheable routes. Empty: every peer's are replaced.
    trusted_proxies: tuple[Annotated[IPNetwork, BeforeValidator(_network)], ...] = (
        DEFAULT_TRUSTED_PROXIES
    )
    # Processes serving the public port (SO_REUSEPORT), each with its share of
    # cache.max_bytes; 1: one process, no supervisor (``proxy.workers``).
    workers: Annotated[int, BeforeValidator(_worker_count)] = 1


DEFAULT_SENSITIVE_QUERY = (
    "token",
    "access_token",
    "auth",
    "key",
    "api_key",
    "apikey",
    "password",
    "secret",
    "signature",
    "sig",
    "session",
)


class LogConfig(BaseModel):
    model_config = _FROZEN
    access: Literal["json", "text", "off"] = "json"
    sensitive_query: tuple[str, ...] = DEFAULT_SENSITIVE_QUERY
    # Access lines waiting for the writer thread, at most; more are dropped, counted.
    access_queue: int = Field(10_000, ge=1)

    @field_validator("access", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare ``off`` as false: take it as meant.
        return "off" if value is False else value


class Config(BaseModel):
    model_config = _FROZEN
    listen: Address = Address(host="0.0.0.0", port=8080)
    upstream: UpstreamConfig
    control: ControlConfig = ControlConfig()
    cache: CacheConfig = CacheConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    mode: Mode = "cache"
    routes: tuple[RouteConfig, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _routes_take_the_mode(cls, data: object) -> object:
        """The top-level ``mode`` is every route's that sets none. A value that is
        not a mode is left to be reported at ``mode`` itself."""
        if not isinstance(data, dict):
            return data
        mode, routes = data.get("mode"), data.get("routes")
        if mode not in ("cache", "shadow") or not isinstance(routes, list):
            return data
        taken = [
            {**route, "mode": mode} if isinstance(route, dict) and "mode" not in route else route
            for route in routes
        ]
        return {**data, "routes": taken}

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.name in seen:
                raise PydanticCustomError(
                    "sidecache_at",
                    "{value} is used by an earlier route: names must be unique",
                    {"value": repr(route.name), "loc": f"routes.{index}.name"},
                )
            seen.add(route.name)
        return self

    @model_validator(mode="after")
    def _control_apart(self) -> Config:
        # Two sites on one socket: the second fails to bind, or (SO_REUSEPORT)
        # the kernel splits connections between the public and control apps.
        if _binds_overlap(self.listen, self.control.listen):
            raise PydanticCustomError(
                "sidecache_at",
                "{value} overlaps listen ({listen}): the control port needs an address "
                "of its own (e.g. '127.0.0.1:9090')",
                {
                    "value": repr(str(self.control.listen)),
                    "listen": repr(str(self.listen)),
                    "loc": "control.listen",
                },
            )
        return self

    @model_validator(mode="after")
    def _share_fits_an_object(self) -> Config:
        # Each worker has max_bytes // workers: an object must fit in one share.
        workers = self.server.workers
        share = self.cache.max_bytes // workers
        if workers > 1 and self.cache.max_object_bytes > share:
            raise PydanticCustomError(
                "sidecache_at",
                "{value} leaves each worker {share} bytes of cache.max_bytes, less than "
                "cache.max_object_bytes ({largest}): lower one of them, or raise max_bytes",
                {
                    "value": repr(workers),
                    "share": share,
                    "largest": self.cache.max_object_bytes,
                    "loc": "server.workers",
                },
            )
        return self


_LOOPBACK_NAMES = {"localhost": ("127.0.0.1", "::1")}


def _binds_overlap(a: Address, b: Address) -> bool:
    """Would binding both addresses clash? Port 0 (the OS chooses) never does."""
    if a.port != b.port or a.port == 0:
        return False
    hosts_a = set(_LOOPBACK_NAMES.get(a.host, (a.host,)))
    hosts_b = set(_LOOPBACK_NAMES.get(b.host, (b.host,)))
    if hosts_a & hosts_b or "::" in hosts_a | hosts_b:
        return True
    # 0.0.0.0 takes the port on every IPv4 address.
    for wild, other in ((hosts_a, hosts_b), (hosts_b, hosts_a)):
        if "0.0.0.0" in wild and any(_is_ipv4(h) for h in other):
            return True
    return False


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


# -- loading ---------------------------------------------------------------------------

_VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")


class _Unset(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _substitute(value: str, environ: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        name, default = m.group(2), m.group(3)
        found = environ.get(name)
        if found is not None and (found != "" or default is None):
            return found
        if default is not None:
            return default
        raise _Unset(name)

    return _VAR.sub(repl, value)


def _walk(node: object, environ: Mapping[str, str], path: str) -> object:
    if isinstance(node, str):
        try:
            return _substitute(node, environ)
        except _Unset as unset:
            raise ConfigError(
                f"{path or '<root>'}: environment variable {unset.name!r} is not set "
                f"(use ${{{unset.name}:-default}} for a default)"
            ) from None
    if isinstance(node, dict):
        return {k: _walk(v, environ, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) or str(part).isdigit():
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_of(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where ``loc`` points, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or str(part).isdigit():
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if current is None:
            return []
    return list(current.model_fields) if current is not None else []


def _translate(exc: ValidationError, data: object) -> str:
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the real one "missing": name the misspelling.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc: tuple[int | str, ...] = tuple(err["loc"])
    # Union members add their own names to the location; keep the key path only.
    loc = tuple(
        p
        for p in loc
        if not (
            isinstance(p, str) and ("[" in p or p in {"literal['all','ignore']", "tuple[str, ...]"})
        )
    )
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "sidecache_at":
        extra = str(ctx["loc"]).split(".")
        loc = (*loc, *extra)
        return f"{_dotted(loc)}: {err['msg']}"
    where = _dotted(loc) or "<root>"
    if kind == "extra_forbidden":
        allowed = _fields_of(Config, loc)
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown key{hint}"
    if kind == "missing":
        return f"{where}: required"
    if kind == "sidecache":
        return f"{where}: {err['msg']}"
    value = err.get("input")
    expected = {
        "int_parsing": "is not a whole number",
        "int_type": "is not a whole number",
        "int_from_float": "is not a whole number",
        "string_type": "is not a string",
        "bool_parsing": "is not true or false",
        "bool_type": "is not true or false",
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": f"must be {ctx.get('ge')} or more",
        "less_than_equal": f"must be {ctx.get('le')} or less",
        "literal_error": f"is not one of {ctx.get('expected')}",
        "model_type": "is not a mapping",
        "model_attributes_type": "is not a mapping",
        "dict_type": "is not a mapping",
        "tuple_type": "is not a list",
    }.get(kind, err["msg"])
    if kind in ("greater_than", "greater_than_equal", "less_than_equal") and isinstance(
        value, float
    ):
        value = _format_number(value)
    return f"{where}: {value!r} {expected}"


def _format_number(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def parse_config(
    data: object,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    machine: Machine | None = None,
) -> Config:
    """Validate already-loaded YAML data. A percentage of memory is resolved against
    ``machine``, else against this machine (read only when one is used)."""
    env = os.environ if environ is None else environ
    if data is None:
        raise ConfigError(f"{source}: the config is empty (it needs at least upstream.url)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, not {type(data).__name__}"
        )
    try:
        substituted = _walk(data, env, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return Config.model_validate(substituted, context={"machine": _once(machine)})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_translate(exc, substituted)}") from None


def _once(machine: Machine | None) -> Callable[[], Machine]:
    found: list[Machine] = [] if machine is None else [machine]

    def get() -> Machine:
        if not found:
            from proxy.machine import read_machine

            found.append(read_machine())
        return found[0]

    return get


def memory_plan(config: Config, limit: int | None) -> MemoryPlan:
    """What ``config`` may need at most, against the cgroup memory ``limit``."""
    return plan_memory(
        max_bytes=config.cache.max_bytes,
        max_object_bytes=config.cache.max_object_bytes,
        max_connections=config.upstream.max_connections,
        workers=config.server.workers,
        limit=limit,
    )


def memory_lines(config: Config, limit: int | None) -> list[str]:
    """The budget as resolved and the memory it may need, as ``check`` prints them."""
    lines: list[str] = []
    if config.cache.max_bytes_from is not None:
        lines.append(
            f"cache.max_bytes {config.cache.max_bytes_from} = {config.cache.max_bytes} bytes "
            f"({mib(config.cache.max_bytes)})"
        )
    return [*lines, memory_plan(config, limit).describe()]


def check_memory(config: Config, limit: int | None, *, source: str = "<config>") -> None:
    """Refuse a config that may need more than the cgroup memory ``limit``, unless
    ``cache.allow_overcommit`` says to run anyway."""
    refusal = memory_plan(config, limit).refusal()
    if refusal is not None and not config.cache.allow_overcommit:
        raise ConfigError(f"{source}: {refusal}")


class _Refused(Exception):
    """YAML that parses but has no place in a config; the message is complete."""


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases. A config has no use for them, and
    they let a few lines stand for a huge structure (an alias bomb) or for one
    that contains itself; refusing them before anything is built costs nothing."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.check_event()  # reads the next event into current_event (typed, unlike peek)
        event = self.current_event
        sigil = "*" if isinstance(event, yaml.AliasEvent) else "&"
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Refused(
                f"{_at(event.start_mark)}: YAML anchors and aliases are not accepted in a "
                f"config (found '{sigil}{anchor}'): write the value out in full"
            )
        return super().compose_node(parent, index)


def _check_keys(node: yaml.Node, path: str) -> None:
    """Refuse a key given twice in one mapping: YAML would keep the last silently."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, value in node.value:
            child = path
            if isinstance(key, yaml.ScalarNode):
                child = f"{path}.{key.value}" if path else str(key.value)
                first = seen.setdefault((key.tag, key.value), key)
                if first is not key:
                    raise _Refused(
                        f"{child}: key given twice (lines {first.start_mark.line + 1} "
                        f"and {key.start_mark.line + 1}): keep one"
                    )
            _check_keys(value, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_keys(item, f"{path}[{index}]")


def _read_yaml(text: str) -> object:
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_keys(node, "")
        return loader.construct_document(node)
    except RecursionError:
        raise _Refused("the config is nested too deeply") from None
    finally:
        loader.dispose()


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    resolve_hosts: bool = True,
    text: str | None = None,
    machine: Machine | None = None,
) -> Config:
    """Read, substitute and validate a YAML config file. ``resolve_hosts`` looks up
    the listen host names (a blocking DNS query when they are names, not addresses);
    a reload turns it off: listen addresses only change on restart. ``text``: the
    file's content, already read (``read_config_text``); messages still name ``path``.
    Percentages of memory and the memory check use ``machine``, by default this one."""
    source = str(path)
    if text is None:
        text = read_config_text(path)
    try:
        data = _read_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    if machine is None:
        from proxy.machine import read_machine

        machine = read_machine()
    config = parse_config(data, source=source, environ=environ, machine=machine)
    for key, address in (("listen", config.listen), ("control.listen", config.control.listen)):
        if resolve_hosts and not _resolves(address.host):
            raise ConfigError(
                f"{source}: {key}: {str(address)!r}: the host name does not resolve (expected "
                "an IP address such as '0.0.0.0', localhost, or a name this machine resolves)"
            )
    check_memory(config, machine.cgroup_limit, source=source)
    return config


def read_config_text(path: str | os.PathLike[str]) -> str:
    """A config file's content; ConfigError naming the file if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read config: {reason}") from None


def _resolves(host: str) -> bool:
    """Can ``host`` be bound? Addresses and localhost are answered without a lookup."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return False
    return True


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str]) -> str:
    """``-c`` if given, else ``$SIDECACHE_CONFIG``, else the default path."""
    return cli_value or environ.get("SIDECACHE_CONFIG") or DEFAULT_CONFIG_PATH


def _duration_text(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


def _size_text(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def route_lifetimes(config: Config) -> dict[str, tuple[float | None, float]]:
    """Route name -> (ttl, longest stale window): what decides a stored entry's
    lifetime when the app's headers did not (``policy.retimed``). ttl is None for an
    ``origin`` route without one."""
    return {r.name: (r.ttl, max(r.stale_while_revalidate, r.stale_if_error)) for r in config.routes}


def statuses_text(route: RouteConfig) -> str:
    if route.statuses is not None:
        return ",".join(map(str, route.statuses))
    return "200" if route.freshness == "route" else "any"


def credentials_text(route: RouteConfig) -> str:
    """``credentials`` as in force: unset, ``bypass`` on a ``route`` route, and on an
    ``origin`` one ``rfc9111`` (section 3.5 for ``Authorization``, bypass for ``Cookie``)."""
    if route.credentials is not None:
        return route.credentials
    return "bypass" if route.freshness == "route" else "rfc9111"


def route_warnings(config: Config) -> list[str]:
    """What is valid but almost certainly not meant: routes that can never apply."""
    routes = config.routes
    return [
        f"routes[{j}] {routes[j].name!r} ({routes[j].match}) never applies: every path it "
        f"matches is matched first by routes[{i}] {routes[i].name!r} ({routes[i].match})"
        for i, j in shadowed(routes)
    ]


def format_routes(config: Config) -> str:
    """The effective configuration, as ``sidecache check`` prints it."""
    workers = config.server.workers
    each = f", {_size_text(config.cache.max_bytes // workers)} per worker" if workers > 1 else ""
    lines = [
        f"listen    {config.listen}" + (f" ({workers} worker processes)" if workers > 1 else ""),
        f"upstream  {config.upstream.url} (max {config.upstream.max_connections} connections, "
        f"timeout {_duration_text(config.upstream.timeout)})",
        f"control   {config.control.listen} (token {'set' if config.control.token else 'not set'})",
        f"cache     {_size_text(config.cache.max_bytes)} "
        f"(objects up to {_size_text(config.cache.max_object_bytes)}{each}, "
        f"policy {config.cache.policy})",
        f"routes    {len(config.routes)}",
    ]
    header = (
        "name",
        "match",
        "methods",
        "freshness",
        "mode",
        "ttl",
        "swr",
        "sie",
        "statuses",
        "query",
        "credentials",
    )
    rows = [header] + [
        (
            r.name,
            r.match,
            ",".join(r.methods),
            r.freshness,
            r.mode,
            _duration_text(r.ttl) if r.ttl is not None else "-",
            _duration_text(r.stale_while_revalidate) if r.stale_while_revalidate else "-",
            _duration_text(r.stale_if_error) if r.stale_if_error else "-",
            statuses_text(r),
            r.query if isinstance(r.query, str) else "[" + ",".join(r.query) + "]",
            credentials_text(r),
        )
        for r in config.routes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
    return "\n".join(lines)
