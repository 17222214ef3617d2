"""The Dockerfile's install steps, replayed in a clean virtualenv.

No Docker engine is needed: the image is ``pip install .`` plus the default
config at ``$SIDECACHE_CONFIG``; this test does the same and runs the entry
point the image runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_image_install_steps_give_a_working_sidecache(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile  # lean by default
    assert 'RUN pip install ".${EXTRAS}"' in dockerfile
    assert 'ENTRYPOINT ["sidecache"]' in dockerfile
    assert "USER sidecache" in dockerfile
    src = _mkdir(tmp_path / "src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "proxy", src / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    etc = _mkdir(tmp_path / "etc")
    shutil.copy(ROOT / "config" / "sidecache.yaml", etc / "sidecache.yaml")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(src)],
        check=True,
        timeout=600,
    )
    env = {**os.environ, "SIDECACHE_CONFIG": str(etc / "sidecache.yaml")}
    env.pop("VIRTUAL_ENV", None)
    out = subprocess.run(
        [str(env_dir / "bin" / "sidecache"), "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "photo" in out.stdout and "/api/photo/{id:[0-9]+}" in out.stdout
    # The installed package is the one under test, not the working tree.
    where = subprocess.run(
        [str(python), "-c", "import proxy; print(proxy.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert str(env_dir) in where
    assert sys.executable != str(python)
    # The sidecar image is lean: the demo app's dependencies are an extra, and
    # the demo commands say so instead of failing with a traceback.
    lean = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('sqlalchemy'))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert lean.strip() == "None"
    demo = subprocess.run(
        [str(env_dir / "bin" / "sidecache"), "upstream", "--db", "sqlite:///x.sqlite3"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 1
    assert "pip install 'sidecache[demo]'" in demo.stderr


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
