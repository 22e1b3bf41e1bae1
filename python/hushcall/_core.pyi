# Type stubs for hushcall._core, the C extension (bindings/python/*.c).
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union, final, overload

__version__: str
DEFAULT_MAX_REQUEST_BYTES: int
DEFAULT_MAX_RESPONSE_BYTES: int
DEFAULT_MAX_DEPTH: int
MAX_DEPTH_LIMIT: int
HPKE_KEM_X25519_SHA256: int
HPKE_KEM_XWING: int
STREAM_END: object  # Call.next_chunk(): the stream ended complete

JSONValue = Union[None, bool, int, float, str, "Response"]

@final
class ZeroOnFreeStr(str):
    """A str whose characters are zeroed when it is freed."""

@final
class SecureBuffer:
    """Compact JSON in locked memory, made by encode()."""
    @property
    def locked(self) -> bool: ...
    @property
    def wiped(self) -> bool: ...
    def __len__(self) -> int: ...
    def wipe(self) -> None: ...
    def _unsafe_bytes(self) -> bytes: ...
    def __enter__(self) -> "SecureBuffer": ...
    def __exit__(self, *exc_info: Any) -> bool: ...

@final
class Response:
    """A view over a decrypted JSON document in locked memory."""
    @property
    def wiped(self) -> bool: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, key: str) -> JSONValue: ...
    @overload
    def __getitem__(self, key: int) -> JSONValue: ...
    @overload
    def __getitem__(self, key: slice) -> List[JSONValue]: ...
    def __getattr__(self, name: str) -> JSONValue: ...
    def __iter__(self) -> Iterator[Union[ZeroOnFreeStr, JSONValue]]: ...
    def __contains__(self, item: object) -> bool: ...
    def get(self, key: Union[str, int], default: Any = None, /) -> Any: ...
    def keys(self) -> List[ZeroOnFreeStr]: ...
    def values(self) -> List[JSONValue]: ...
    def items(self) -> List[Tuple[ZeroOnFreeStr, JSONValue]]: ...
    def to_dict(self) -> Any: ...
    def wipe(self) -> None: ...
    def __enter__(self) -> "Response": ...
    def __exit__(self, *exc_info: Any) -> bool: ...
    def _repr_html_(self) -> str: ...
    def _repr_pretty_(self, p: Any, cycle: bool, /) -> None: ...

@final
class KeyPair:
    """A client RSA key pair (hush_keypair); immutable, the private half never leaves C."""
    @classmethod
    def generate(cls, bits: int = 4096) -> "KeyPair": ...
    @classmethod
    def load(
        cls, private_key_path: Union[str, bytes, "os.PathLike[str]"], password: Optional[str] = None
    ) -> "KeyPair": ...
    def save(
        self,
        key_dir: Union[str, bytes, "os.PathLike[str]"],
        password: Optional[str] = None,
        *,
        overwrite: bool = False,
    ) -> None: ...
    def public_pem(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def bits(self) -> int: ...

@final
class HpkeKeypair:
    """A server's HPKE key pair for v2 (hush_hpke_keypair); the private half never leaves C."""
    @classmethod
    def generate(cls, kem: int) -> "HpkeKeypair": ...
    @classmethod
    def load(
        cls, path: Union[str, bytes, "os.PathLike[str]"], password: Optional[str] = None
    ) -> "HpkeKeypair": ...
    def save(
        self,
        path: Union[str, bytes, "os.PathLike[str]"],
        password: Optional[str] = None,
        *,
        kdf: str = "pbkdf2",
        overwrite: bool = False,
    ) -> None: ...
    def public_bytes(self) -> bytes: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def kem(self) -> int: ...

@final
class Client:
    """A client of one NOMYO-compatible endpoint (hush_client); thread-safe."""
    def __init__(
        self,
        base_url: str,
        *,
        api_key: Optional[str] = None,
        allow_http: bool = False,
        timeout: Optional[float] = None,
        connect_timeout: Optional[float] = None,
        max_retries: int = 2,
        security_tier: Optional[str] = None,
        key_dir: Optional[str] = None,
        password: Optional[str] = None,
        ca_file: Optional[str] = None,
        tls_pin: Optional[str] = None,
        server_key_fingerprint: Optional[str] = None,
        secure_memory: bool = True,
        max_request_bytes: Optional[int] = None,
        key_bits: int = 0,
        client_key: Optional["KeyPair"] = None,
        require_attestation: bool = False,
        attestation_policy: Optional[str] = None,
        protocol: Optional[str] = None,
        require_pq: bool = False,
        v2_key_fingerprint: Optional[str] = None,
    ) -> None: ...
    def complete(
        self,
        request: Any,
        *,
        api_key: Optional[str] = None,
        security_tier: Optional[str] = None,
        base_url: Optional[str] = None,
        path: Optional[str] = None,
        method: Optional[str] = None,
    ) -> Response: ...
    def stream(
        self,
        request: Any,
        *,
        api_key: Optional[str] = None,
        security_tier: Optional[str] = None,
        base_url: Optional[str] = None,
        path: Optional[str] = None,
    ) -> "Stream": ...
    def public_key_pem(self) -> str: ...

@final
class Stream:
    """A streamed call of a Client: an iterator of Response chunks; freeing it cancels the call."""
    @property
    def done(self) -> bool: ...
    @property
    def payload_id(self) -> str: ...
    def __iter__(self) -> "Stream": ...
    def __next__(self) -> Response: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...

@final
class Call:
    """One request submitted to an Engine."""
    @property
    def payload_id(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    def done(self) -> bool: ...
    def cancel(self) -> None: ...
    def result(self) -> Response: ...
    def next_chunk(self) -> Union[Response, None, object]: ...  # None: none yet; STREAM_END: ended
    def wait(self, timeout: Optional[float] = None) -> bool: ...
    def close(self) -> None: ...

@final
class Engine:
    """The asynchronous request engine: watch fileno(), then drain()."""
    def __init__(self, *, workers: int = 0) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    def fileno(self) -> int: ...
    def submit(
        self,
        client: Client,
        request: Any,
        *,
        api_key: Optional[str] = None,
        security_tier: Optional[str] = None,
        base_url: Optional[str] = None,
        path: Optional[str] = None,
        method: Optional[str] = None,
        stream: bool = False,
    ) -> Call: ...
    def drain(self) -> List[Call]: ...
    def close(self) -> None: ...

@final
class Tpm:
    """A TPM 2.0 reached through a tss2 TCTI, for Server(tpm=...)."""
    def __init__(
        self,
        tcti: str,
        *,
        pcrs: Optional[str] = None,
        key_alg: str = "ecc",
        persistent_handle: int = 0,
    ) -> None: ...
    @property
    def pcr_banks(self) -> str: ...

@final
class Server:
    """The server role of protocols v1 and v2 (hush_server): the gateway's core."""
    def __init__(
        self,
        key: KeyPair,
        *,
        backend: str = "echo",
        upstream_url: Optional[str] = None,
        upstream_api_key: Optional[str] = None,
        upstream_ca_file: Optional[str] = None,
        upstream_timeout: Optional[float] = None,
        upstream_connect_timeout: Optional[float] = None,
        max_package_bytes: Optional[int] = None,
        max_answer_bytes: Optional[int] = None,
        server_name: Optional[str] = None,
        secure_memory: bool = True,
        tpm: Optional["Tpm"] = None,
        allow_http_upstream: bool = False,
        echo_delay_ms: int = 0,
    ) -> None: ...
    def handle(
        self,
        package: Union[bytes, bytearray, memoryview],
        public_key: str,
        payload_id: str,
        security_tier: Optional[str] = None,
        *,
        attest: bool = False,
    ) -> Tuple[bytes, Dict[str, Any]]: ...
    def open(
        self,
        package: Union[bytes, bytearray, memoryview],
        public_key: str,
        payload_id: str,
        security_tier: Optional[str] = None,
        *,
        attest: bool = False,
    ) -> "Exchange": ...
    def open_v2(
        self,
        encapsulated_key: str,
        body: Union[bytes, bytearray, memoryview],
        keys: Sequence[Tuple[int, HpkeKeypair]],
        key_config: Optional[str] = None,
        path: Optional[str] = None,
    ) -> "Exchange": ...
    def open_plaintext(
        self, path: str, body: Union[bytes, bytearray, memoryview]
    ) -> "Exchange": ...
    def models(self) -> bytes: ...

class Exchange:
    """A request Server.open or open_v2 checked and opened into locked memory, not yet answered."""
    @property
    def replay_key(self) -> Tuple[bytes, bytes]: ...
    @property
    def v2_key(self) -> Optional[Tuple[int, int]]: ...
    @property
    def is_stream(self) -> bool: ...
    @property
    def response_nonce(self) -> Optional[str]: ...
    def answer(self) -> Tuple[Union[bytes, Tuple[str, bytes]], Dict[str, Any]]: ...
    def stream(self, emit: Callable[[Optional[bytes]], Any], /) -> str: ...
    def close(self) -> None: ...

class ReplayCache:
    """The requests a gateway has opened, by digest (hush_replay_cache)."""
    def __init__(self, max_entries: int = 1000000, *, max_answers: int = 3) -> None: ...
    def check_and_remember(
        self, digest: bytes, binding: bytes, now: float, expires: float
    ) -> Tuple[str, int]: ...
    def stats(self) -> Dict[str, int]: ...

def wipe_environment_variable(name: str, /) -> None: ...
def encode(obj: Any, *, max_bytes: int = ..., max_depth: int = ...) -> SecureBuffer: ...
def decode(
    data: Union[SecureBuffer, bytes, bytearray, memoryview],
    *,
    max_bytes: int = ...,
    max_depth: int = ...,
) -> Response: ...
def get_memory_protection_info() -> Dict[str, Any]: ...
def hpke_pubkey_fingerprint(kem: int, public_bytes: bytes) -> str: ...
def v2_key_configs(keys: Sequence[Tuple[int, HpkeKeypair]], *, bare: bool = False) -> bytes: ...
def attest_key_config_qualifying(nonce: bytes, configs: bytes) -> bytes: ...
def attest_answer_qualifying(enc: bytes, response_nonce: bytes) -> bytes: ...
def attest_verify_bound(
    tpm_attestation: Union[bytes, str], qualifying: bytes, policy: Optional[Union[bytes, str]] = None
) -> Dict[str, Any]: ...

# Test hooks.
def _raise_status(
    code: int, message: str = ..., http_status: int = ..., offset: int = ...
) -> None: ...
def _status_table() -> List[Tuple[int, str, str, Type[BaseException]]]: ...
