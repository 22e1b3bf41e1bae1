"""hushcall's exceptions: NOMYO's names and constructors under one base.

The classes live here, in Python, so that they keep the ``nomyo`` client's
signatures (``APIError(message, status_code=None, error_details=None)`` and
its subclasses with their HTTP defaults) and can be subclassed and pickled
like any other exception. Which class a C status raises is decided in one
place only: the table in ``bindings/python/module.c``, which ``hushcall._core``
reads these classes into when it is imported.

Every exception raised by the C core also carries:

* ``kind`` -- a short, stable name of the core's status (``"limit"``,
  ``"unauthorized"``, ``"auth"``, ...), the same as the Lua binding's
  ``err.kind``;
* ``offset`` -- for malformed JSON, the byte offset of the problem.

Messages never hold plaintext, key bytes or the content of a field.

How statuses map (``_core._status_table()`` lists the table itself):

=====================================  ==========================================
HTTP 400 / 401 / 403 / 429 / 500 / 503  InvalidRequestError / AuthenticationError /
                                        ForbiddenError / RateLimitError /
                                        ServerError / ServiceUnavailableError
any other HTTP status                   APIError
a size or depth limit (``limit``)      InvalidRequestError with status_code None:
                                        refused before anything was sent
connection failure, TLS failure         APIConnectionError
timeout                                 APITimeoutError (an APIConnectionError)
circuit breaker open                    CircuitOpenError (an APIConnectionError)
authentication of the answer failed,
malformed or unsupported envelope,
pinned key mismatch, a required TPM
attestation missing or not verified,
unusable key,
key password or permissions, crypto     SecurityError
bad argument, wrong JSON type, base64   InvalidArgumentError (also a ValueError)
malformed JSON                          MalformedJSONError (also a ValueError)
secure memory could not be had          SecureMemoryError (also a MemoryError)
call cancelled or engine shut down      CallCancelledError
a stream ended without its end marker   IncompleteStreamError (a SecurityError)
not found, I/O, exists, internal        HushcallError
=====================================  ==========================================

``CallCancelledError`` is deliberately not ``asyncio.CancelledError``: the
engine shutting down is not the awaiting task being cancelled. Code that
cancels a task still sees asyncio's own exception.

``WipedError`` (also a ``ReferenceError``, like a dead weak proxy) is raised
by the binding itself when a Response view is used after its document was
wiped.
"""

from typing import Any, Dict, Optional

__all__ = [
    "HushcallError",
    "APIError",
    "AuthenticationError",
    "InvalidRequestError",
    "ForbiddenError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "APIConnectionError",
    "APITimeoutError",
    "CircuitOpenError",
    "SecurityError",
    "InvalidArgumentError",
    "MalformedJSONError",
    "SecureMemoryError",
    "CallCancelledError",
    "IncompleteStreamError",
    "WipedError",
]


class HushcallError(Exception):
    """Base class of every exception hushcall raises on its own account."""

    #: The core's status as a short name ("limit", "auth", ...); None when
    #: raised from Python code rather than from the C core.
    kind: Optional[str] = None
    #: Byte offset of a JSON parse error, else None.
    offset: Optional[int] = None


class APIError(HushcallError):
    """An HTTP-level failure (NOMYO's APIError): status_code and error_details."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = None,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.error_details = error_details
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class AuthenticationError(APIError):
    """HTTP 401: the API key was refused."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 401,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, status_code, error_details)


class InvalidRequestError(APIError):
    """HTTP 400, or a request refused locally (over max_bytes) before any I/O."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 400,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, status_code, error_details)


class ForbiddenError(APIError):
    """HTTP 403, e.g. a model not allowed for the requested security tier."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 403,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, status_code, error_details)


class RateLimitError(APIError):
    """HTTP 429 after the retries the client allows."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 429,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, status_code, error_details)


class ServerError(APIError):
    """HTTP 500."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 500,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, status_code, error_details)


class ServiceUnavailableError(APIError):
    """HTTP 503 after the retries the client allows."""

    def __init__(
        self,
        message: str,
        status_code: Optional[int] = 503,
        error_details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, status_code, error_details)


class APIConnectionError(HushcallError):
    """The endpoint could not be reached: connection refused or dropped, TLS failure."""


class APITimeoutError(APIConnectionError):
    """A connect or transfer timeout expired."""


class CircuitOpenError(APIConnectionError):
    """Failing fast after repeated failures; retry after the cool-down."""


class SecurityError(HushcallError):
    """A security check failed: the answer did not authenticate, an envelope was
    malformed or unsupported, a pinned key did not match, or a key could not be
    used (wrong password, permissions too open, not RSA or too small)."""


class IncompleteStreamError(SecurityError):
    """A streamed answer ended without its end marker (``data: [DONE]`` or a
    chunk with ``finish_reason``): raised after the last authenticated chunk,
    since EHBP itself cannot tell a finished stream from a cut one."""


class InvalidArgumentError(HushcallError, ValueError):
    """The core refused an argument, or a JSON value was not of the type asked for."""


class MalformedJSONError(HushcallError, ValueError):
    """Text that is not strict RFC 8259 JSON; ``offset`` says where."""


class SecureMemoryError(HushcallError, MemoryError):
    """Secure (locked, guarded) memory could not be had."""


class CallCancelledError(HushcallError):
    """The call was cancelled, or its engine shut down, before it finished."""


class WipedError(HushcallError, ReferenceError):
    """A Response (or SecureBuffer) was used after it was wiped."""
