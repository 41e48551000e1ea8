"""Search baselines from Python: a thin wrapper over ``mlir-rl-cli search`` (C++), which runs against a server like
any agent and writes the best schedule as a Transform script plus a JSON record.

    import mlir_rl
    record = mlir_rl.search("benchmark://nn-ops/matmul_512x512x512_f32", strategy="beam", budget=200)
    record["best_speedup"], record["best_time_ms"], record["actions"]
    print(record["transform_script_text"])       # apply with mlir-opt --transform-interpreter

Strategies: ``random`` (masked random episodes), ``greedy`` and ``beam`` (per op, children of a state scored by
measuring the schedule the heuristic completes them to), ``local`` (local search from the heuristic's schedule),
``heuristic`` (the heuristic's schedule and the untransformed one only). ``budget`` counts evaluations (distinct
schedules measured); ``budget_s`` bounds the wall time (checked before each evaluation batch).

The executable is the first that exists of ``$MLIR_RL_CLI_BIN``; ``mlir_rl/bin/mlir-rl-cli`` (bundled); the build a
wheel was built from; the checkout's ``build/bin`` (``$MLIR_RL_BUILD_DIR``); ``PATH``. Without ``server=`` the
server is ``$MLIR_RL_SERVER`` or the process's local server (as for :func:`mlir_rl.make`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import local_server
from .errors import MlirRlError

__all__ = ["search", "find_cli_binary", "SearchError", "STRATEGIES"]

CLI_NAME = "mlir-rl-cli"
ENV_CLI_BIN = "MLIR_RL_CLI_BIN"
STRATEGIES = ("random", "greedy", "beam", "local", "heuristic")


class SearchError(MlirRlError, RuntimeError):
    """``mlir-rl-cli search`` failed; the message holds the end of its output."""


def find_cli_binary(environ: Optional[Mapping[str, str]] = None) -> Path:
    """The ``mlir-rl-cli`` executable (see the module's documentation for the order)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(ENV_CLI_BIN)
    if explicit:
        path = Path(explicit).expanduser()
        if local_server._is_executable(path):
            return path
        raise local_server.ServerNotFoundError(f"${ENV_CLI_BIN}={explicit} is not an executable file")
    looked = [f"${ENV_CLI_BIN} (not set)"]
    places = [local_server._PACKAGE_DIR / "bin" / CLI_NAME]
    places += [Path(d) / CLI_NAME for d in local_server._recorded_bin_dirs()]
    root = local_server._checkout_root()
    if root is not None:
        build = Path(environ.get(local_server.ENV_BUILD_DIR) or "build")
        places.append((root / build).resolve() / "bin" / CLI_NAME)
    for path in places:
        if local_server._is_executable(path):
            return path
        looked.append(str(path))
    found = shutil.which(CLI_NAME, path=environ.get("PATH", os.defpath))
    if found:
        return Path(found)
    looked.append("PATH")
    raise local_server.ServerNotFoundError(f"{CLI_NAME} not found. Looked at: " + ", ".join(looked) +
                                           f". Build it (bash scripts/build.sh) or set ${ENV_CLI_BIN}.")


def search(benchmark: str, strategy: str = "local", budget: Optional[int] = 200, *, budget_s: Optional[float] = None,
           server: Optional[str] = None, seed: int = 0, beam_width: Optional[int] = None,
           parallel: Optional[int] = None, num_threads: Optional[int] = None, out: Optional[os.PathLike] = None,
           timeout: Optional[float] = None, progress: bool = False, extra_args: Sequence[str] = (),
           cli: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """Searches a schedule for ``benchmark`` and returns the JSON record of ``mlir-rl-cli search`` as a dict.

    Besides the record's fields (``best_speedup``, ``best_time_ms``, ``reference_ms``, ``evaluations``,
    ``actions``, ``descriptions``, ``trace``, ``server``, ``machine``, ...) the dict holds ``transform_script_text``
    and ``payload_text`` (the benchmark IR the script applies to) when a schedule was found. ``out``: a path prefix
    to keep the files (``<out>.json``, ``<out>.transform.mlir``, ``<out>.payload.mlir``); by default they go to a
    temporary directory that is removed. ``budget=None`` or 0: no evaluation limit (then give ``budget_s``).
    ``timeout``: seconds before the process is killed (``SearchError``). ``progress``: let the progress lines through
    to stderr. Raises ``ValueError`` for an unknown strategy and ``SearchError`` when the search fails.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    binary = Path(cli) if cli is not None else find_cli_binary()
    with local_server.address(server) as address, tempfile.TemporaryDirectory(prefix="mlir-rl-search-") as tmp:
        prefix = Path(out) if out is not None else Path(tmp) / "search"
        args: List[str] = [str(binary), "search", f"--server={address}", f"--benchmark={benchmark}",
                           f"--strategy={strategy}", f"--budget_evals={int(budget or 0)}", f"--seed={int(seed)}",
                           f"--out={prefix}", f"--progress={'lines' if progress else 'off'}"]
        if budget_s is not None:
            args.append(f"--budget_s={float(budget_s)}")
        if beam_width is not None:
            args.append(f"--beam_width={int(beam_width)}")
        if parallel is not None:
            args.append(f"--parallel={int(parallel)}")
        if num_threads is not None:
            args.append(f"--num_threads={int(num_threads)}")
        args += list(extra_args)
        try:
            done = subprocess.run(args, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SearchError(f"{CLI_NAME} search did not finish within {timeout} s") from e
        record_path = Path(f"{prefix}.json")
        if not record_path.exists():
            raise SearchError(f"{CLI_NAME} search exited with status {done.returncode} and wrote no record:\n"
                              f"{(done.stderr or '')[-2000:]}{done.stdout[-2000:]}")
        record = json.loads(record_path.read_text())
        if done.returncode != 0:
            raise SearchError(f"{CLI_NAME} search exited with status {done.returncode}: "
                              f"{record.get('error') or (done.stderr or '')[-2000:]}")
        for key, field in (("transform_script", "transform_script_text"), ("payload", "payload_text")):
            path = record.get(key)
            if path and Path(path).exists():
                record[field] = Path(path).read_text()
        if out is None:  # the files are gone with the temporary directory
            record.pop("transform_script", None)
            record.pop("payload", None)
        return record
