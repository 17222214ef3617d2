"""The deployment kit (deploy/, Dockerfile) checked against the config it mounts.

No container engine runs here: these checks parse the compose file, the
Kubernetes manifests and the Dockerfile and compare them with the sidecache
config they ship (ports, paths, probes, token wiring, memory, shutdown grace),
so that none of them can drift from the others.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from proxy.config import Config, ConfigError, load_config, parse_duration
from proxy.demo.run import default_db_url

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
MiB = 1024**2
INTERPRETER = 64 * MiB  # README "Memory": about 50 MiB idle, rounded up
TOKEN = "a-test-token"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} in {KUBE}"
            found[doc["kind"]] = doc
    return found


def _config(name: str = "sidecache.yaml", **env: str) -> Config:
    return load_config(DEPLOY / name, {"SIDECACHE_CONTROL_TOKEN": TOKEN, **env})


def _quantity(text: str) -> int:
    units = {"Ki": 1024, "Mi": MiB, "Gi": 1024**3}
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", text).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    assert isinstance(found, dict)
    return found


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- the configs they mount ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["sidecache.yaml", "sidecache-shared.yaml"])
def test_the_mounted_configs_load_and_expose_the_control_port_only_with_a_token(name: str) -> None:
    config = _config(name)
    assert config.control.listen.host == "0.0.0.0"
    assert config.control.token == TOKEN
    # The token has no default: an unset Secret stops the start.
    with pytest.raises(ConfigError, match="SIDECACHE_CONTROL_TOKEN"):
        load_config(DEPLOY / name, {})


def test_the_shared_config_differs_from_the_plain_one_only_by_the_shared_tier() -> None:
    plain, shared = _config(), _config("sidecache-shared.yaml")
    assert plain.cache.shared is None and shared.cache.shared is not None
    assert shared.model_copy(update={"cache": plain.cache}) == plain
    compose = _yaml(DEPLOY / "docker-compose.yaml")
    redis = urlsplit(shared.cache.shared.url)
    assert redis.hostname in compose["services"]
    assert compose["services"][redis.hostname]["profiles"] == ["shared"]


# --- docker compose ------------------------------------------------------------------------


def test_compose_publishes_the_configs_ports_and_mounts_it_where_the_image_reads() -> None:
    config = _config()
    services = _yaml(DEPLOY / "docker-compose.yaml")["services"]
    proxy = services["sidecache"]
    target = proxy["environment"]["SIDECACHE_CONFIG"]
    assert target == _dockerfile_env()["SIDECACHE_CONFIG"]
    mounts = [v.rsplit(":", 2) for v in proxy["volumes"]]
    assert [m[0] for m in mounts if m[1:] == [target, "ro"]] == [
        "${SIDECACHE_CONFIG_FILE:-./sidecache.yaml}"
    ]
    assert f"8080:{config.listen.port}" in proxy["ports"]
    # The control port is exposed in the container (token) but published on loopback only.
    control = config.control.listen.port
    assert f"127.0.0.1:{control}:{control}" in proxy["ports"]
    assert proxy["environment"]["SIDECACHE_CONTROL_TOKEN"].startswith("${SIDECACHE_CONTROL_TOKEN:?")
    health = " ".join(proxy["healthcheck"]["test"])
    assert f"http://127.0.0.1:{config.control.listen.port}/healthz" in health
    assert parse_duration(proxy["stop_grace_period"]) > config.server.shutdown_grace


def test_compose_points_sidecache_at_the_app_service() -> None:
    services = _yaml(DEPLOY / "docker-compose.yaml")["services"]
    upstream = urlsplit(services["sidecache"]["environment"]["SIDECACHE_UPSTREAM"])
    config = _config(SIDECACHE_UPSTREAM=upstream.geturl())
    assert config.upstream.url.rstrip("/") == upstream.geturl()
    app = services[upstream.hostname]
    assert _flag(app["command"], "--host") == "0.0.0.0"
    assert int(_flag(app["command"], "--port")) == upstream.port
    assert str(upstream.port) in app["expose"]
    # The demo app's database goes to the image's data directory.
    assert any(v.endswith(":" + _dockerfile_env()["XDG_CACHE_HOME"]) for v in app["volumes"])


# --- Kubernetes ----------------------------------------------------------------------------


def test_the_configmap_is_the_config_file_verbatim() -> None:
    data = _manifests()["ConfigMap"]["data"]
    assert data == {"sidecache.yaml": (DEPLOY / "sidecache.yaml").read_text()}


def test_the_pod_mounts_the_configmap_where_sidecache_reads_it() -> None:
    found = _manifests()
    pod = found["Deployment"]["spec"]["template"]["spec"]
    proxy = _container(found["Deployment"], "sidecache")
    config_path = Path(_env(proxy)["SIDECACHE_CONFIG"])
    assert str(config_path) == _dockerfile_env()["SIDECACHE_CONFIG"]
    (mount,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == found["ConfigMap"]["metadata"]["name"]
    assert config_path.name in found["ConfigMap"]["data"]


def test_the_token_comes_from_the_secret() -> None:
    found = _manifests()
    ref = _env(_container(found["Deployment"], "sidecache"))["SIDECACHE_CONTROL_TOKEN"]
    secret = found["Secret"]
    assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"]
    token = secret["stringData"][ref["secretKeyRef"]["key"]]
    assert _config(SIDECACHE_CONTROL_TOKEN=token).control.token == token


def test_the_pod_ports_probes_and_scrape_match_the_config() -> None:
    found = _manifests()
    deployment = found["Deployment"]
    config = _config()
    proxy = _container(deployment, "sidecache")
    assert _port(proxy, "http") == config.listen.port
    assert _port(proxy, "control") == config.control.listen.port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert proxy[probe]["httpGet"] == {"path": path, "port": "control"}
    notes = deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == config.control.listen.port
    assert notes["prometheus.io/path"] == "/metrics"


def test_sidecache_reaches_the_app_in_the_pod_on_loopback() -> None:
    deployment = _manifests()["Deployment"]
    url = urlsplit(_env(_container(deployment, "sidecache"))["SIDECACHE_UPSTREAM"])
    assert url.hostname == "127.0.0.1"
    app = _container(deployment, "app")
    assert _flag(app["args"], "--host") == "127.0.0.1"
    assert int(_flag(app["args"], "--port")) == url.port
    assert _config(SIDECACHE_UPSTREAM=url.geturl()).upstream.url.rstrip("/") == url.geturl()


def test_the_service_targets_sidecache_not_the_app() -> None:
    found = _manifests()
    service, deployment = found["Service"], found["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert _port(_container(deployment, "sidecache"), "http") == _config().listen.port


def test_memory_request_and_limit_cover_the_budget_and_the_documented_overhead() -> None:
    config = _config()
    resources = _container(_manifests()["Deployment"], "sidecache")["resources"]
    request = _quantity(resources["requests"]["memory"])
    limit = _quantity(resources["limits"]["memory"])
    # README "Memory": the cache, the interpreter, one fill buffer per upstream
    # connection, and up to max_bytes more for fills of unknown length.
    assert request >= config.cache.max_bytes + INTERPRETER
    fills = config.upstream.max_connections * config.cache.max_object_bytes
    assert limit >= 2 * config.cache.max_bytes + INTERPRETER + fills
    assert limit <= 2 * (2 * config.cache.max_bytes + INTERPRETER + fills)  # not padded blindly


def test_the_termination_grace_covers_prestop_and_the_drain() -> None:
    pod = _manifests()["Deployment"]["spec"]["template"]["spec"]
    command = _container(_manifests()["Deployment"], "sidecache")["lifecycle"]["preStop"]
    (sleep,) = [float(a) for a in command["exec"]["command"][1:]]
    assert command["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= sleep + _config().server.shutdown_grace + 2


def test_the_images_are_this_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    deployment = _manifests()["Deployment"]
    assert _container(deployment, "sidecache")["image"] == f"sidecache:{version}"
    assert _container(deployment, "app")["image"] == f"sidecache-demo:{version}"
    services = _yaml(DEPLOY / "docker-compose.yaml")["services"]
    assert services["sidecache"]["build"] == ".."  # lean: no demo extra
    assert services["app"]["build"] == {"context": "..", "args": {"EXTRAS": "[demo]"}}


# --- Dockerfile ----------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _dockerfile():
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_dockerfile_pins_its_base_and_gives_a_data_directory() -> None:
    steps = _dockerfile()
    (base,) = [rest for word, rest in steps if word == "FROM"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert ("USER", "sidecache") in steps
    data = _dockerfile_env()["XDG_CACHE_HOME"]
    assert ("VOLUME", f'["{data}"]') in steps
    assert any(w == "RUN" and f"chown sidecache:sidecache {data}" in r for w, r in steps)


def test_the_dockerfile_health_check_labels_and_ports_match_the_default_config() -> None:
    steps = _dockerfile()
    config = load_config(ROOT / "config" / "sidecache.yaml", {})
    (health,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert f"http://127.0.0.1:{config.control.listen.port}/healthz" in health
    (exposed,) = [rest.split() for word, rest in steps if word == "EXPOSE"]
    assert exposed == [str(config.listen.port), str(config.control.listen.port)]
    (labels,) = [rest for word, rest in steps if word == "LABEL"]
    assert _dockerfile_env()["SIDECACHE_CONFIG"] in labels
    assert f'port.public="{config.listen.port}"' in labels
    assert f'port.control="{config.control.listen.port} ' in labels


def test_the_demo_database_goes_to_the_images_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image's user has no home: its default path must come from XDG_CACHE_HOME.
    data = tmp_path / _dockerfile_env()["XDG_CACHE_HOME"].lstrip("/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))
    assert default_db_url() == f"sqlite:///{data / 'sidecache' / 'demo.sqlite3'}"
    assert (data / "sidecache").is_dir()
    assert not (tmp_path / "no-such-home").exists()
