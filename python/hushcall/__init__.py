"""hushcall: end-to-end encrypted chat completions (streamed too, and the
rest of OpenAI's endpoints) whose plaintext stays in locked, zeroed C memory.

This package is a thin layer over ``hushcall._core``, a CPython extension
around libhushcall. Requests are serialized by ``encode`` from plain Python
values straight into locked memory; answers are ``Response`` views over a
document that never leaves it, and only the leaves you read become Python
objects (``ZeroOnFreeStr`` strings, zeroed when freed).
"""

from . import errors
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    CallCancelledError,
    CircuitOpenError,
    ForbiddenError,
    HushcallError,
    IncompleteStreamError,
    InvalidArgumentError,
    InvalidRequestError,
    MalformedJSONError,
    RateLimitError,
    SecureMemoryError,
    SecurityError,
    ServerError,
    ServiceUnavailableError,
    WipedError,
)
from ._core import (
    Call,
    Engine,
    KeyPair,
    Response,
    SecureBuffer,
    ZeroOnFreeStr,
    __version__,
    decode,
    get_memory_protection_info,
)
from .client import AsyncClient, Client, SecureChatCompletion
from .memory_lock import MemoryLockWarning, encode
from .streams import AsyncStream, Stream

__all__ = [
    "__version__",
    "encode",
    "decode",
    "get_memory_protection_info",
    "MemoryLockWarning",
    "KeyPair",
    "Response",
    "SecureBuffer",
    "ZeroOnFreeStr",
    "Client",
    "AsyncClient",
    "SecureChatCompletion",
    "Stream",
    "AsyncStream",
    "Engine",
    "Call",
    *errors.__all__,
]
