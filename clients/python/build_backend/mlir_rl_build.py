"""PEP 517 / PEP 660 build backend of the mlir-rl Python client, written with the standard library only.

Why a backend of our own: pip builds a project with a pyproject.toml in an isolated environment into which it
installs the backend named in ``requires`` from an index, so ``setuptools.build_meta`` means a download and fails
offline even where setuptools is installed. With ``requires = []`` and this backend (``backend-path``) pip installs
nothing, so ``pip install ./clients/python`` works offline.

Hooks: ``build_wheel``, ``build_sdist``, ``build_editable`` (``pip install -e``), ``prepare_metadata_for_build_wheel``
and ``..._editable``, ``get_requires_for_build_*`` (none). Metadata comes from pyproject.toml's ``[project]`` table
(read with ``tomllib``: building needs Python 3.11+).

The protocol modules ``mlir_rl/v1/env_pb2.py`` and ``env_pb2_grpc.py`` are generated from
``proto/mlir_rl/v1/env.proto`` with ``protoc`` and ``grpc_python_plugin`` (``$PROTOC`` and ``$GRPC_PYTHON_PLUGIN``
override the ones on PATH; Debian: protobuf-compiler, protobuf-compiler-grpc): into a temporary directory for a wheel
or an sdist, into the source tree for an editable install (where the CMake build writes them too). Without protoc,
the copies in the source tree are used when they are not older than the proto. The proto is ``../../proto`` from
here in the repository and ``proto/`` in an sdist.

A wheel built from a checkout records the checkout's ``build/bin`` (``$MLIR_RL_BUILD_DIR/bin``) in
``mlir_rl/_build_info.py``, one of the places ``mlir_rl.local_server`` looks for ``mlir-rl-server``. The binaries
themselves (≈90 MB each) are bundled only on request: config setting ``binaries`` (``pip install --config-settings
binaries=DIR``) or ``$MLIR_RL_WHEEL_BINARIES``, an absolute directory holding mlir-rl-server and mlir-rl-runner
(and optionally mlir-rl-cli), or ``1`` for the checkout's build/bin. The wheel then also holds the checkout's benchmarks and
is tagged for this platform.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

PROJECT = Path(__file__).resolve().parents[1]  # clients/python, or the root of an unpacked sdist
PACKAGE = "mlir_rl"
PROTO = Path("mlir_rl") / "v1" / "env.proto"
GENERATED = ("env_pb2.py", "env_pb2_grpc.py")  # in mlir_rl/v1
BUILD_INFO = "_build_info.py"  # in mlir_rl, wheels only
BINARIES = ("mlir-rl-server", "mlir-rl-runner")
OPTIONAL_BINARIES = ("mlir-rl-cli",)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same sources make the same archive

__all__ = [
    "build_wheel", "build_sdist", "build_editable", "prepare_metadata_for_build_wheel",
    "prepare_metadata_for_build_editable", "get_requires_for_build_wheel", "get_requires_for_build_sdist",
    "get_requires_for_build_editable",
]


class BuildError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# metadata


def _project() -> Dict[str, Any]:
    try:
        import tomllib
    except ImportError as e:  # Python < 3.11
        raise BuildError(f"building mlir-rl needs Python 3.11 or later (tomllib), not {sys.version.split()[0]}") from e
    with open(PROJECT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    init = (PROJECT / PACKAGE / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    if not found or found.group(1) != project["version"]:
        raise BuildError(f"pyproject.toml says version {project['version']} but mlir_rl/__init__.py says "
                         f"{found.group(1) if found else 'nothing'}: make them agree")
    return project


def _dist_name(project: Mapping[str, Any]) -> str:
    return re.sub(r"[-_.]+", "_", project["name"]).lower()


def _dist_info(project: Mapping[str, Any]) -> str:
    return f"{_dist_name(project)}-{project['version']}.dist-info"


def _metadata(project: Mapping[str, Any]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Requires-Dist: {r}" for r in project.get("dependencies", [])]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in requirements]
    readme = project.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        body = (PROJECT / readme).read_text(encoding="utf-8")
    return "\n".join(lines) + "\n\n" + body


def _entry_points(project: Mapping[str, Any]) -> str:
    groups: Dict[str, Mapping[str, str]] = {}
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    if project.get("gui-scripts"):
        groups["gui_scripts"] = project["gui-scripts"]
    groups.update(project.get("entry-points", {}))
    out = []
    for group, entries in groups.items():
        out.append(f"[{group}]")
        out += [f"{name} = {target}" for name, target in entries.items()]
        out.append("")
    return "\n".join(out)


def _dist_info_files(project: Mapping[str, Any], tag: str, purelib: bool) -> Dict[str, bytes]:
    wheel = (f"Wheel-Version: 1.0\nGenerator: mlir_rl_build (clients/python/build_backend)\n"
             f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: {tag}\n")
    return {"METADATA": _metadata(project).encode(), "WHEEL": wheel.encode(),
            "entry_points.txt": _entry_points(project).encode(), "top_level.txt": f"{PACKAGE}\n".encode()}


def _write_metadata_directory(metadata_directory: str) -> str:
    project = _project()
    target = Path(metadata_directory) / _dist_info(project)
    target.mkdir(parents=True, exist_ok=True)
    for name, data in _dist_info_files(project, "py3-none-any", True).items():
        (target / name).write_bytes(data)
    return target.name


# ---------------------------------------------------------------------------------------------------------------
# sources


def _repository() -> Optional[Path]:
    """The repository root when building from a checkout (clients/python inside it), else None."""
    root = PROJECT.parents[1]
    if (root / "proto" / PROTO).is_file() and (root / "clients" / "python") == PROJECT:
        return root
    return None


def _proto_root() -> Path:
    for root in (PROJECT / "proto", PROJECT.parents[1] / "proto"):
        if (root / PROTO).is_file():
            return root
    raise BuildError(f"{PROTO} not found under {PROJECT / 'proto'} or {PROJECT.parents[1] / 'proto'}")


def _package_files() -> Iterator[Tuple[str, Path]]:
    """(path in the wheel, file) of the package's own sources: no generated modules, caches or bundled files."""
    skip = {f"{PACKAGE}/v1/{g}" for g in GENERATED} | {f"{PACKAGE}/{BUILD_INFO}"}
    base = PROJECT / PACKAGE
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(PROJECT).as_posix()
        parts = path.relative_to(base).parts
        if not path.is_file() or "__pycache__" in parts or parts[0] in ("bin", "benchmarks") or rel in skip:
            continue
        if path.suffix in (".py", ".pyi") or path.name == "py.typed":
            yield rel, path


def _tool(variable: str, name: str, *fallbacks: str) -> Optional[str]:
    if os.environ.get(variable):
        return os.environ[variable]
    found = shutil.which(name)
    if found:
        return found
    return next((f for f in fallbacks if os.access(f, os.X_OK)), None)


def _generate(out: Path) -> List[Path]:
    """Runs protoc with the gRPC Python plugin on the proto; returns the generated modules (under ``out``)."""
    protoc = _tool("PROTOC", "protoc")
    plugin = _tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin", "/usr/bin/grpc_python_plugin")
    if protoc is None or plugin is None:
        raise FileNotFoundError("protoc" if protoc is None else "grpc_python_plugin")
    root = _proto_root()
    command = [protoc, "-I", str(root), f"--python_out={out}", f"--grpc_python_out={out}",
               f"--plugin=protoc-gen-grpc_python={plugin}", str(root / PROTO)]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed with status {done.returncode}:\n{done.stdout}")
    return [out / PACKAGE / "v1" / g for g in GENERATED]


def _tree_copies_usable() -> bool:
    """The source tree's generated modules exist and are not older than the proto."""
    copies = [PROJECT / PACKAGE / "v1" / g for g in GENERATED]
    if not all(c.is_file() for c in copies):
        return False
    try:
        proto_time = (_proto_root() / PROTO).stat().st_mtime
    except BuildError:
        return True  # no proto to be stale against
    return min(c.stat().st_mtime for c in copies) >= proto_time


def _protocol_modules(scratch: Path) -> List[Path]:
    """Freshly generated modules, or the source tree's copies when protoc is missing and they are up to date."""
    try:
        return _generate(scratch)
    except FileNotFoundError as missing:
        if _tree_copies_usable():
            print(f"mlir_rl_build: {missing} not found; using the generated modules in {PROJECT / PACKAGE / 'v1'}",
                  file=sys.stderr)
            return [PROJECT / PACKAGE / "v1" / g for g in GENERATED]
        raise BuildError(f"{missing} is needed to generate mlir_rl/v1/{GENERATED[0]} and {GENERATED[1]} from "
                         f"{PROTO} (Debian: apt-get install protobuf-compiler protobuf-compiler-grpc; or set $PROTOC "
                         f"and $GRPC_PYTHON_PLUGIN), and the source tree has no up-to-date copies") from None


def _ensure_tree_modules() -> None:
    """For an editable install: the generated modules in the source tree, (re)generated when missing or stale."""
    tree = PROJECT / PACKAGE / "v1"
    with tempfile.TemporaryDirectory() as scratch:
        try:
            generated = _generate(Path(scratch))
        except FileNotFoundError:
            if _tree_copies_usable():
                return
            raise
        for g in generated:
            if not (tree / g.name).is_file() or (tree / g.name).read_bytes() != g.read_bytes():
                shutil.copyfile(g, tree / g.name)


def _build_dir(repo: Path) -> Path:
    return (repo / (os.environ.get("MLIR_RL_BUILD_DIR") or "build")).resolve()


def _binaries_source(config_settings: Optional[Mapping[str, Any]]) -> Optional[Path]:
    value = (config_settings or {}).get("binaries") or os.environ.get("MLIR_RL_WHEEL_BINARIES", "")
    value = str(value).strip()
    if value.lower() in ("", "0", "no", "false"):
        return None
    repo = _repository()
    if value.lower() in ("1", "yes", "true"):
        if repo is None:
            raise BuildError("binaries=1 takes the binaries from the checkout's build/bin; this is no checkout "
                             "(give binaries=DIR)")
        return _build_dir(repo) / "bin"
    path = Path(value).expanduser()
    if not path.is_absolute():  # pip runs the backend in clients/python, not where it was called
        raise BuildError(f"binaries={value}: give an absolute directory (or 1 for the checkout's build/bin)")
    return path


# ---------------------------------------------------------------------------------------------------------------
# archives


class _WheelWriter:
    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records: List[Tuple[str, str, int]] = []

    @staticmethod
    def _info(arcname: str, executable: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (0o100755 if executable else 0o100644) << 16
        return info

    def add_bytes(self, arcname: str, data: bytes, executable: bool = False) -> None:
        self.zip.writestr(self._info(arcname, executable), data)
        self.records.append((arcname, _hash(hashlib.sha256(data)), len(data)))

    def add_file(self, arcname: str, path: Path, executable: bool = False) -> None:
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as src, self.zip.open(self._info(arcname, executable), "w") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        self.records.append((arcname, _hash(digest), size))

    def finish(self, dist_info: str) -> None:
        lines = [f"{name},sha256={digest},{size}" for name, digest, size in self.records]
        lines.append(f"{dist_info}/RECORD,,")
        self.zip.writestr(self._info(f"{dist_info}/RECORD", False), "\n".join(lines) + "\n")
        self.zip.close()


def _hash(digest: "hashlib._Hash") -> str:
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _platform_tag() -> str:
    return re.sub(r"[-.]", "_", sysconfig.get_platform())


def _build_info(repo: Path) -> bytes:
    return ("# Written by the build backend (build_backend/mlir_rl_build.py) when this wheel was built from a\n"
            "# checkout: where mlir_rl.local_server looks for mlir-rl-server after the places before it.\n"
            f"SERVER_BIN_DIRS = [{str(_build_dir(repo) / 'bin')!r}]\n").encode()


def build_wheel(wheel_directory: str, config_settings: Optional[Mapping[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    project = _project()
    binaries = _binaries_source(config_settings)
    repo = _repository()
    if binaries is not None:
        missing = [b for b in BINARIES if not os.access(binaries / b, os.X_OK)]
        if missing:
            raise BuildError(f"cannot bundle the binaries: {', '.join(missing)} missing or not executable in "
                             f"{binaries}")
        if repo is None:
            raise BuildError("bundling the binaries needs the repository's benchmarks/: build from the checkout")
    tag = f"py3-none-{_platform_tag()}" if binaries is not None else "py3-none-any"
    name = f"{_dist_name(project)}-{project['version']}-{tag}.whl"
    dist_info = _dist_info(project)
    Path(wheel_directory).mkdir(parents=True, exist_ok=True)
    target = Path(wheel_directory) / name
    with tempfile.TemporaryDirectory() as scratch:
        wheel = _WheelWriter(target)
        try:
            for arcname, path in _package_files():
                wheel.add_file(arcname, path)
            for module in _protocol_modules(Path(scratch)):
                wheel.add_file(f"{PACKAGE}/v1/{module.name}", module)
            if repo is not None:
                wheel.add_bytes(f"{PACKAGE}/{BUILD_INFO}", _build_info(repo))
            if binaries is not None:
                for b in BINARIES + tuple(b for b in OPTIONAL_BINARIES if os.access(binaries / b, os.X_OK)):
                    wheel.add_file(f"{PACKAGE}/bin/{b}", binaries / b, executable=True)
                for path in sorted((repo / "benchmarks").rglob("*.mlir")):
                    rel = path.relative_to(repo / "benchmarks")
                    wheel.add_file(f"{PACKAGE}/benchmarks/{rel.as_posix()}", path)
            for file, data in _dist_info_files(project, tag, binaries is None).items():
                wheel.add_bytes(f"{dist_info}/{file}", data)
            wheel.finish(dist_info)
        except BaseException:
            wheel.zip.close()
            target.unlink(missing_ok=True)
            raise
    return name


def build_editable(wheel_directory: str, config_settings: Optional[Mapping[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    """A wheel that puts clients/python on sys.path (a .pth file): the package runs from the source tree, whose
    generated modules are brought up to date first."""
    project = _project()
    _ensure_tree_modules()
    tag = "py3-none-any"
    name = f"{_dist_name(project)}-{project['version']}-{tag}.whl"
    dist_info = _dist_info(project)
    Path(wheel_directory).mkdir(parents=True, exist_ok=True)
    wheel = _WheelWriter(Path(wheel_directory) / name)
    wheel.add_bytes(f"__editable__.{_dist_name(project)}.pth", f"{PROJECT}\n".encode())
    for file, data in _dist_info_files(project, tag, True).items():
        wheel.add_bytes(f"{dist_info}/{file}", data)
    wheel.finish(dist_info)
    return name


def build_sdist(sdist_directory: str, config_settings: Optional[Mapping[str, Any]] = None) -> str:
    """``<name>-<version>.tar.gz``: pyproject.toml, README.md, the backend, the package's sources, the proto (under
    proto/) and the modules generated from it (so building from the sdist needs no protoc)."""
    project = _project()
    base = f"{_dist_name(project)}-{project['version']}"
    Path(sdist_directory).mkdir(parents=True, exist_ok=True)
    name = f"{base}.tar.gz"
    files: List[Tuple[str, Path]] = [("pyproject.toml", PROJECT / "pyproject.toml")]
    if project.get("readme"):
        files.append((project["readme"], PROJECT / project["readme"]))
    files += [(p.relative_to(PROJECT).as_posix(), p) for p in sorted((PROJECT / "build_backend").glob("*.py"))]
    files += list(_package_files())
    files.append((f"proto/{PROTO.as_posix()}", _proto_root() / PROTO))
    with tempfile.TemporaryDirectory() as scratch:
        files += [(f"{PACKAGE}/v1/{m.name}", m) for m in _protocol_modules(Path(scratch))]
        with tarfile.open(Path(sdist_directory) / name, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            def add(arcname: str, data: bytes) -> None:
                info = tarfile.TarInfo(f"{base}/{arcname}")
                info.size, info.mode, info.mtime = len(data), 0o644, 315532800  # 1980-01-01, as in wheels
                tar.addfile(info, io.BytesIO(data))
            for arcname, path in files:
                add(arcname, path.read_bytes())
            add("PKG-INFO", _metadata(project).encode())
    return name


def get_requires_for_build_wheel(config_settings: Optional[Mapping[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Mapping[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Mapping[str, Any]] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: Optional[Mapping[str, Any]] = None) -> str:
    return _write_metadata_directory(metadata_directory)


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: Optional[Mapping[str, Any]] = None) -> str:
    return _write_metadata_directory(metadata_directory)
