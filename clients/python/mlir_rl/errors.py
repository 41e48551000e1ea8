"""Exceptions raised by the mlir-rl client, one per gRPC status code the server uses.

Every exception derives from :class:`MlirRlError` and, where a built-in fits, from that built-in too, so callers
can catch either (``except ValueError`` catches a malformed action). ``str(error)`` is the server's message.

=================== ============================ ==========================
gRPC status         exception                    also a
=================== ============================ ==========================
INVALID_ARGUMENT    InvalidArgumentError         ValueError
OUT_OF_RANGE        InvalidArgumentError         ValueError
NOT_FOUND           NotFoundError                KeyError (LookupError)
FAILED_PRECONDITION FailedPreconditionError      RuntimeError
DEADLINE_EXCEEDED   DeadlineExceededError        TimeoutError
UNAVAILABLE         UnavailableError             ConnectionError
RESOURCE_EXHAUSTED  ResourceExhaustedError       RuntimeError
UNIMPLEMENTED       UnimplementedError           NotImplementedError
INTERNAL, UNKNOWN,  InternalError                RuntimeError
DATA_LOSS
anything else       MlirRlError
=================== ============================ ==========================
"""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
    "MlirRlError",
    "InvalidArgumentError",
    "NotFoundError",
    "FailedPreconditionError",
    "DeadlineExceededError",
    "UnavailableError",
    "ResourceExhaustedError",
    "UnimplementedError",
    "InternalError",
    "from_rpc_error",
]


class MlirRlError(Exception):
    """Base class of every error raised by the client.

    Attributes:
        message: the server's message (or the client's, for errors detected locally).
        code: the ``grpc.StatusCode`` of the failed call, or ``None`` for errors detected by the client.
    """

    code: Optional[grpc.StatusCode] = None

    def __init__(self, message: str = ""):
        # Only the message is passed on: OSError-derived subclasses would read a second argument as strerror.
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(MlirRlError, ValueError):
    """A malformed request: wrong action length, value out of range, masked action, bad option."""


class NotFoundError(MlirRlError, KeyError):
    """An unknown benchmark or session."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class FailedPreconditionError(MlirRlError, RuntimeError):
    """The call is not valid in the current state, e.g. a step after the end of the episode or on a closed env."""


class DeadlineExceededError(MlirRlError, TimeoutError):
    """The call did not finish within its timeout."""


class UnavailableError(MlirRlError, ConnectionError):
    """The server cannot be reached."""


class AbortedError(MlirRlError, RuntimeError):
    """The server undid the call (e.g. its evaluation's worker was killed from outside twice): nothing was applied,
    and the same call may be sent again. :class:`~mlir_rl.env.Connection` retries it by itself."""


class ResourceExhaustedError(MlirRlError, RuntimeError):
    """The server is out of a resource (sessions, memory, message size)."""


class UnimplementedError(MlirRlError, NotImplementedError):
    """The server does not implement the call."""


class InternalError(MlirRlError, RuntimeError):
    """The server failed; the message says why."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def error_class(code: Optional[grpc.StatusCode]) -> type:
    """The exception class for a gRPC status code."""
    return _BY_CODE.get(code, MlirRlError)


def from_rpc_error(error: grpc.RpcError, context: str = "") -> MlirRlError:
    """Converts a ``grpc.RpcError`` raised by a call into the matching :class:`MlirRlError`.

    The message is the server's status message (``details()``); when the server gave none, the status code name.
    ``context`` (e.g. the RPC name) is only used for that fallback. Raise the result ``from error`` to keep the
    original as ``__cause__``.
    """
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    if not details:
        name = code.name if isinstance(code, grpc.StatusCode) else "unknown error"
        details = f"{context}: {name}" if context else name
    exc = error_class(code)(details)
    exc.code = code
    return exc
