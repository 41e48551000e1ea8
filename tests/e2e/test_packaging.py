"""Installing the Python client with pip, offline, into fresh virtual environments, and using the installed package
from outside the source tree (no PYTHONPATH, another working directory).

The commands are the README's: ``python3 -m venv --system-site-packages V && V/bin/pip install ./clients/python``
(and ``-e``), run with ``PIP_NO_INDEX=1`` so that any attempt to download (a build backend, a dependency) fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from conftest import CLIENT_DIR, REPO_ROOT, server_binary

MATMUL = "benchmark://nn-ops/matmul_64x64x64_f32"
PIP_TIMEOUT = 300
RUN_TIMEOUT = 180


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment of commands run in a venv: offline pip, no PYTHONPATH, no server settings of the caller."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MLIR_RL_SERVER", "MLIR_RL_SERVER_ARGS", "MLIR_RL_WHEEL_BINARIES")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def run(args, *, cwd: Path, env: Dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed with status {done.returncode}:\n{done.stdout}"
    return done


def make_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", "--system-site-packages", path], cwd=path.parent, env=clean_env(),
        timeout=PIP_TIMEOUT)
    assert (path / "bin" / "pip").exists(), "the venv has no pip (Debian: apt-get install python3-venv python3-pip)"
    return path


def source_files() -> set:
    return {p for p in CLIENT_DIR.rglob("*") if "__pycache__" not in p.parts}


def run_in_venv(venv: Path, code: str, cwd: Path, **env: str) -> dict:
    """Runs ``code`` with the venv's python in ``cwd`` (outside the source tree); returns the JSON it prints last."""
    script = cwd / "check.py"
    script.write_text(textwrap.dedent(code))
    done = run([venv / "bin" / "python", script], cwd=cwd, env=clean_env(**env), timeout=RUN_TIMEOUT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def require_server_binary() -> Path:
    binary = server_binary()
    if not binary.exists():
        message = f"server binary {binary} not found (build it or set MLIR_RL_SERVER_BIN)"
        if os.environ.get("MLIR_RL_REQUIRE_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary.resolve()


EPISODE = """\
import json, sys
import numpy as np
import mlir_rl
from mlir_rl import local_server

def episode(env):
    obs, info = env.reset(seed=0)
    steps, total, done = 0, 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.zeros(len(env.nvec), dtype=np.int64))
        steps, total, done = steps + 1, total + reward, terminated or truncated
    return {"steps": steps, "reward": total, "evaluated": info["evaluation"] is not None}

server = sys.argv[1] if len(sys.argv) > 1 else None
with mlir_rl.make("%s", server=server) as env:
    result = episode(env)
    shared = local_server._shared  # the local server, while an environment uses it
    result.update(server=env.server, local_binary=None if shared is None else str(shared.binary))
result.update(module=mlir_rl.__file__, protocol=mlir_rl.v1.env_pb2.__file__)
print(json.dumps(result))
""" % MATMUL


# ---------------------------------------------------------------------------------------------------------------
# pip install ./clients/python


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with ``pip install ./clients/python`` done (from the repository root, as the README says)."""
    root = tmp_path_factory.mktemp("pip-install")
    venv = make_venv(root / "V")
    before = source_files()
    run([venv / "bin" / "pip", "install", "./clients/python"], cwd=REPO_ROOT, env=clean_env(), timeout=PIP_TIMEOUT)
    assert source_files() == before, "building the wheel wrote into the source tree"
    return venv


def test_installed_package_modules_metadata_and_entry_points(installed, tmp_path):
    site = run_in_venv(installed, """\
        import importlib.metadata as md, json, os, sys
        import mlir_rl
        from mlir_rl import _build_info
        from mlir_rl.v1 import env_pb2, env_pb2_grpc
        eps = {f"{ep.group}:{ep.name}": ep for ep in md.distribution("mlir-rl").entry_points}
        loaded = {key: callable(ep.load()) for key, ep in eps.items()}
        print(json.dumps({
            "module": mlir_rl.__file__, "pb2": env_pb2.__file__, "grpc": env_pb2_grpc.__file__,
            "sys_path": sys.path, "version": md.version("mlir-rl"), "package_version": mlir_rl.__version__,
            "requires": md.requires("mlir-rl"), "entry_points": {k: ep.value for k, ep in eps.items()},
            "loaded": loaded, "service": env_pb2.DESCRIPTOR.services_by_name["MlirRlEnv"].full_name,
            "stub": hasattr(env_pb2_grpc, "MlirRlEnvStub"), "bin_dirs": _build_info.SERVER_BIN_DIRS,
            "files": sorted(str(f) for f in md.files("mlir-rl"))}))
        """, cwd=tmp_path)
    packages = str(installed / "lib")
    for key in ("module", "pb2", "grpc"):
        assert site[key].startswith(packages), f"{key} imported from {site[key]}, not from the venv"
    assert str(CLIENT_DIR) not in site["sys_path"]
    assert site["version"] == site["package_version"]
    assert {r.split(">")[0].split(";")[0].strip() for r in site["requires"]} >= {"grpcio", "protobuf", "numpy"}
    assert site["service"] == "mlir_rl.v1.MlirRlEnv" and site["stub"]
    assert site["entry_points"] == {
        "console_scripts:mlir-rl-train": "mlir_rl.train:main",
        "console_scripts:mlir-rl-evaluate": "mlir_rl.evaluate:main",
        "gymnasium.envs:mlir_rl": "mlir_rl:register_envs",
    }
    assert all(site["loaded"].values()), site["loaded"]
    assert "mlir_rl/v1/env_pb2.py" in site["files"] and "mlir_rl/v1/env_pb2_grpc.py" in site["files"]
    assert not any(f.startswith("mlir_rl/bin/") for f in site["files"]), "binaries bundled without being asked"
    build_dir = Path(os.environ.get("MLIR_RL_BUILD_DIR") or "build")
    assert site["bin_dirs"] == [str((REPO_ROOT / build_dir).resolve() / "bin")]
    # The generated modules are protoc's output for proto/, byte for byte (CMake writes the same into the tree).
    for name in ("env_pb2.py", "env_pb2_grpc.py"):
        installed_copy = Path(site["pb2"]).with_name(name).read_bytes()
        tree_copy = CLIENT_DIR / "mlir_rl" / "v1" / name
        if tree_copy.exists():
            assert installed_copy == tree_copy.read_bytes(), name
    for script in ("mlir-rl-train", "mlir-rl-evaluate"):
        path = installed / "bin" / script
        assert path.is_file() and os.access(path, os.X_OK), f"console script {script} missing"


def test_installed_package_runs_an_episode_against_a_server(installed, server, tmp_path):
    script = tmp_path / "episode.py"
    script.write_text(EPISODE)
    done = run([installed / "bin" / "python", script, server], cwd=tmp_path, env=clean_env(), timeout=RUN_TIMEOUT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"].startswith(str(installed / "lib"))
    assert result["server"] == server
    assert result["steps"] >= 1 and result["evaluated"]
    assert result["local_binary"] is None


def test_installed_package_starts_its_own_server(installed, tmp_path):
    binary = require_server_binary()
    script = tmp_path / "episode.py"
    script.write_text(EPISODE)
    done = run([installed / "bin" / "python", script], cwd=tmp_path,
               env=clean_env(MLIR_RL_SERVER_BIN=str(binary)), timeout=RUN_TIMEOUT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["local_binary"] == str(binary)
    assert result["server"].startswith("127.0.0.1:") and result["evaluated"]


def test_installed_console_scripts_and_agent(installed, tmp_path):
    """The installed mlir-rl-train / mlir-rl-evaluate answer --help (without importing PyTorch), and the agent
    subpackage is installed with them (it imports where the venv sees Debian's python3-torch)."""
    for script, flag in (("mlir-rl-train", "--resume"), ("mlir-rl-evaluate", "--random-episodes")):
        done = subprocess.run([str(installed / "bin" / script), "--help"], cwd=tmp_path, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
        assert done.returncode == 0, done.stdout
        assert flag in done.stdout
    probe = ("import importlib.util, json; spec = importlib.util.find_spec('mlir_rl.agent'); "
             "print(json.dumps({'agent': spec and spec.origin, 'torch': importlib.util.find_spec('torch') is not None}))")
    done = run([installed / "bin" / "python", "-c", probe], cwd=tmp_path, env=clean_env(), timeout=RUN_TIMEOUT)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["agent"] and found["agent"].startswith(str(installed / "lib")), found
    if found["torch"]:
        run([installed / "bin" / "python", "-c", "import mlir_rl.agent"], cwd=tmp_path, env=clean_env(),
            timeout=RUN_TIMEOUT)


# ---------------------------------------------------------------------------------------------------------------
# pip install -e, sdist, bundled binaries


def test_editable_install_runs_from_the_source_tree(tmp_path):
    venv = make_venv(tmp_path / "V")
    run([venv / "bin" / "pip", "install", "-e", "./clients/python"], cwd=REPO_ROOT, env=clean_env(),
        timeout=PIP_TIMEOUT)
    site = run_in_venv(venv, """\
        import importlib.metadata as md, json, shutil
        import mlir_rl
        from mlir_rl.v1 import env_pb2
        print(json.dumps({"module": mlir_rl.__file__, "pb2": env_pb2.__file__,
                          "scripts": [shutil.which(s) for s in ("mlir-rl-train", "mlir-rl-evaluate")],
                          "eps": sorted(ep.name for ep in md.distribution("mlir-rl").entry_points)}))
        """, cwd=tmp_path, PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}")
    assert site["module"] == str(CLIENT_DIR / "mlir_rl" / "__init__.py")
    assert site["pb2"] == str(CLIENT_DIR / "mlir_rl" / "v1" / "env_pb2.py")
    assert site["scripts"] == [str(venv / "bin" / s) for s in ("mlir-rl-train", "mlir-rl-evaluate")]
    assert site["eps"] == ["mlir-rl-evaluate", "mlir-rl-train", "mlir_rl"]


def test_sdist_holds_the_proto_and_installs_without_protoc(tmp_path):
    dist = tmp_path / "dist"
    done = run([sys.executable, "-c", "import sys, mlir_rl_build; print(mlir_rl_build.build_sdist(sys.argv[1]))",
                dist], cwd=tmp_path, env=clean_env(PYTHONPATH=str(CLIENT_DIR / "build_backend")),
               timeout=RUN_TIMEOUT)
    sdist = dist / done.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    base = sdist.name[:-len(".tar.gz")]
    for required in ("pyproject.toml", "PKG-INFO", "build_backend/mlir_rl_build.py", "proto/mlir_rl/v1/env.proto",
                     "mlir_rl/__init__.py", "mlir_rl/v1/env_pb2.py", "mlir_rl/v1/env_pb2_grpc.py"):
        assert f"{base}/{required}" in names, required
    venv = make_venv(tmp_path / "V")
    # No protoc: the sdist's generated modules are used.
    run([venv / "bin" / "pip", "install", sdist], cwd=tmp_path, env=clean_env(PROTOC=str(tmp_path / "no-protoc")),
        timeout=PIP_TIMEOUT)
    site = run_in_venv(venv, """\
        import json, mlir_rl
        from mlir_rl.v1 import env_pb2_grpc
        print(json.dumps({"module": mlir_rl.__file__, "stub": hasattr(env_pb2_grpc, "MlirRlEnvStub")}))
        """, cwd=tmp_path)
    assert site["module"].startswith(str(venv / "lib")) and site["stub"]


def test_wheel_with_bundled_binaries_needs_no_other_server(tmp_path):
    binary = require_server_binary()
    if not (binary.parent / "mlir-rl-runner").exists():
        pytest.skip(f"no mlir-rl-runner next to {binary}")
    venv = make_venv(tmp_path / "V")
    run([venv / "bin" / "pip", "install", "./clients/python"], cwd=REPO_ROOT,
        env=clean_env(MLIR_RL_WHEEL_BINARIES=str(binary.parent)), timeout=PIP_TIMEOUT)
    bundled = next((venv / "lib").glob("python3*/site-packages/mlir_rl/bin/mlir-rl-server"))
    script = tmp_path / "episode.py"
    script.write_text(EPISODE)
    env = clean_env(PATH="/usr/bin:/bin")
    env.pop("MLIR_RL_SERVER_BIN", None)
    env.pop("MLIR_RL_BUILD_DIR", None)
    done = run([venv / "bin" / "python", script], cwd=tmp_path, env=env, timeout=RUN_TIMEOUT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["local_binary"] == str(bundled)
    assert result["evaluated"]  # the bundled runner compiled and ran the schedule
