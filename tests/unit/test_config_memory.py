"""``cache.max_bytes`` as a percentage of memory, and the memory check of a loaded
config (proxy/config.py with proxy/memfit.py). The machine is an argument: these
tests never read the one they run on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, load_config, memory_lines, parse_config
from proxy.memfit import Machine

MIB = 1024**2
GIB = 1024**3
LIMITED = Machine(cgroup_limit=GIB, physical=16 * GIB)
UNLIMITED = Machine(cgroup_limit=None, physical=16 * GIB)
UNKNOWN = Machine(cgroup_limit=None, physical=None)


def config(cache: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"upstream": {"url": "http://127.0.0.1:8000"}, "cache": cache, **more}


@pytest.mark.parametrize(
    ("value", "machine", "resolved", "source"),
    [
        ("60%", LIMITED, 644245094, "60% of the cgroup memory limit (1024MiB)"),
        ("50%", UNLIMITED, 8 * GIB, "50% of physical memory (16384MiB)"),
        (" 12.5 % ", LIMITED, GIB // 8, "12.5% of the cgroup memory limit (1024MiB)"),
        ("100%", LIMITED, GIB, "100% of the cgroup memory limit (1024MiB)"),
    ],
)
def test_a_percentage_resolves_against_the_limit_else_physical_memory(
    value: str, machine: Machine, resolved: int, source: str
) -> None:
    c = parse_config(config({"max_bytes": value}), environ={}, machine=machine)
    assert c.cache.max_bytes == resolved
    assert c.cache.max_bytes_from == source


def test_a_size_is_not_a_percentage() -> None:
    c = parse_config(config({"max_bytes": "512MiB"}), environ={}, machine=LIMITED)
    assert c.cache.max_bytes == 512 * MIB
    assert c.cache.max_bytes_from is None


@pytest.mark.parametrize(
    ("value", "machine", "message"),
    [
        ("0%", LIMITED, "'0%' is not a percentage of memory: more than 0% and at most 100%"),
        ("150%", LIMITED, "'150%' is not a percentage of memory: more than 0% and at most 100%"),
        ("abc%", LIMITED, "'abc%' is not a percentage (e.g. '60%')"),
        ("-10%", LIMITED, "'-10%' is not a percentage (e.g. '60%')"),
        (
            "60%",
            UNKNOWN,
            "'60%' cannot be resolved: neither a cgroup memory limit nor the physical memory "
            "is known here; give a size (e.g. '1GiB')",
        ),
        # A share too small to hold an object is the usual error, with the bytes.
        (
            "1%",
            Machine(cgroup_limit=GIB, physical=None),
            None,
        ),
    ],
)
def test_bad_percentages_name_the_key(value: str, machine: Machine, message: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"max_bytes": value}), source="c.yaml", environ={}, machine=machine)
    if message is None:
        assert str(info.value) == (
            "c.yaml: cache.max_object_bytes: 16777216 must not exceed cache.max_bytes (10737418)"
        )
    else:
        assert str(info.value) == f"c.yaml: cache.max_bytes: {message}"


def test_workers_share_a_resolved_percentage() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            config({"max_bytes": "10%"}, server={"workers": 8}), environ={}, machine=LIMITED
        )
    # 107374182 bytes in eight shares of 13421772: each less than an object.
    assert "leaves each worker 13421772 bytes of cache.max_bytes" in str(info.value)


def test_allow_overcommit_is_a_boolean() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"allow_overcommit": "perhaps"}), source="c.yaml", environ={})
    assert str(info.value) == "c.yaml: cache.allow_overcommit: 'perhaps' is not true or false"


FITS = """
upstream: {url: "http://127.0.0.1:8000", max_connections: 10}
cache: {max_bytes: 50%, max_object_bytes: 8MiB}
"""
TOO_MUCH = """
upstream: {url: "http://127.0.0.1:8000"}
cache: {max_bytes: 512MiB}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecache.yaml"
    path.write_text(text)
    return path


def test_a_config_that_fits_loads_and_says_how(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, FITS), environ={}, machine=LIMITED)
    assert c.cache.max_bytes == GIB // 2
    assert memory_lines(c, LIMITED.cgroup_limit) == [
        "cache.max_bytes 50% of the cgroup memory limit (1024MiB) = 536870912 bytes (512MiB)",
        "cache.max_bytes 512MiB + overhead 64MiB (1 process) + in flight 80MiB "
        "(upstream.max_connections 10 x 8MiB) = 656MiB at most, within the cgroup memory limit "
        "1024MiB (368MiB to spare)",
    ]


def test_a_config_over_the_limit_is_refused_with_the_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, TOO_MUCH)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, machine=LIMITED)
    assert str(info.value) == (
        f"{path}: memory: cache.max_bytes 512MiB + overhead 64MiB (1 process) + in flight "
        "800MiB (upstream.max_connections 50 x 16MiB) = 1376MiB > the cgroup memory limit "
        "1024MiB: lower cache.max_bytes, upstream.max_connections or cache.max_object_bytes, "
        "or set cache.allow_overcommit: true"
    )


def test_allow_overcommit_runs_it_anyway(tmp_path: Path) -> None:
    path = write(tmp_path, TOO_MUCH.replace("512MiB}", "512MiB, allow_overcommit: true}"))
    c = load_config(path, environ={}, machine=LIMITED)
    assert memory_lines(c, LIMITED.cgroup_limit)[-1].endswith(
        "= 1376MiB at most, over the cgroup memory limit 1024MiB (cache.allow_overcommit)"
    )


def test_without_a_cgroup_limit_nothing_is_refused(tmp_path: Path) -> None:
    # 1376 MiB on a machine of 1 GiB of RAM: physical memory is shared with
    # everything else on the machine, and may be backed by swap; only a cgroup
    # limit is a line the kernel enforces on this process.
    path = write(tmp_path, TOO_MUCH)
    c = load_config(path, environ={}, machine=Machine(cgroup_limit=None, physical=GIB))
    assert c.cache.max_bytes == 512 * MIB


def test_parse_config_does_not_check_memory() -> None:
    # The check belongs to loading a file to run it (serve, check, reload).
    c = parse_config(config({"max_bytes": "900MiB"}), environ={}, machine=LIMITED)
    assert c.cache.max_bytes == 900 * MIB
