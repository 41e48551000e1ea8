"""Python client of mlir-rl, a gRPC reinforcement-learning environment for MLIR compiler optimization.

    import mlir_rl
    env = mlir_rl.make("benchmark://nn-ops/matmul_64x64x64_f32")   # starts a local mlir-rl-server
    obs, info = env.reset(seed=0)

    envs = mlir_rl.make_vec(8, server="127.0.0.1:50051")  # 8 sessions on that server, one StepMany call per step
    envs = mlir_rl.make_vec(8, servers=["127.0.0.1:50051", "127.0.0.1:50052"])  # spread; failover by replay
    envs = mlir_rl.make_vec(8, servers="dns:///tasks.mlirrl_server:50051")      # every replica the name lists

With gymnasium importable, ``gymnasium.make("mlir_rl/MlirRl-v0", benchmark=..., server=...)`` works too; for
Stable-Baselines3, ``mlir_rl.sb3.make_sb3_vec(8, server=...)``. Search baselines (random, greedy, beam, local
search; ``mlir-rl-cli search``): ``mlir_rl.search(benchmark, strategy="beam", budget=200, server=...)``.

Without ``server=``, ``$MLIR_RL_SERVER`` or else a local server shared by the process (:mod:`mlir_rl.local_server`).
The generated protocol modules (``mlir_rl.v1.env_pb2``, ``env_pb2_grpc``) are produced by the build (CMake, or
``pip install``); see README.md.
"""

__version__ = "0.1.0"

try:
    from .v1 import env_pb2 as _env_pb2  # noqa: F401
    from .v1 import env_pb2_grpc as _env_pb2_grpc  # noqa: F401
except ImportError as _e:  # pragma: no cover - only without generated stubs
    raise ImportError(
        "mlir_rl: the generated protocol modules mlir_rl/v1/env_pb2.py and env_pb2_grpc.py are missing. Build the "
        "project, or run from the repository root: protoc -I proto --python_out=clients/python "
        "--grpc_python_out=clients/python --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin "
        f"proto/mlir_rl/v1/env.proto ({_e})") from _e

from . import cluster, errors, local_server  # noqa: E402
from .client import generator_families, list_benchmarks, make, make_vec, version  # noqa: E402
from .search import search  # noqa: E402
from .env import MlirRlEnv  # noqa: E402
from .vector import AutoresetMode, MlirRlVectorEnv  # noqa: E402
from .registration import ENV_ID, register_envs  # noqa: E402
from .errors import (  # noqa: E402
    AbortedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    MlirRlError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    UnimplementedError,
)

# ``gymnasium.make("mlir_rl/MlirRl-v0", ...)`` once the package is imported (a no-op without gymnasium).
try:
    register_envs()
except Exception as _e:  # pragma: no cover - a broken gymnasium must not make the client unusable
    import logging as _logging

    _logging.getLogger("mlir_rl").warning("could not register the environments with gymnasium: %s", _e)

__all__ = [
    "make",
    "search",
    "ENV_ID",
    "register_envs",
    "make_vec",
    "MlirRlVectorEnv",
    "AutoresetMode",
    "list_benchmarks",
    "generator_families",
    "version",
    "MlirRlEnv",
    "errors",
    "cluster",
    "local_server",
    "register_envs",
    "MlirRlError",
    "AbortedError",
    "InvalidArgumentError",
    "NotFoundError",
    "FailedPreconditionError",
    "DeadlineExceededError",
    "UnavailableError",
    "ResourceExhaustedError",
    "UnimplementedError",
    "InternalError",
    "__version__",
]
