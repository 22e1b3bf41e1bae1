"""The clients: ``Client`` (synchronous), ``AsyncClient`` (asyncio) and
``SecureChatCompletion`` (the ``nomyo`` package's interface).

All three sit on ``hushcall._core``: requests are encoded in C straight into
locked memory, sealed and sent by the core, and answers come back as
``Response`` views over locked memory. ``AsyncClient`` needs no thread per
call: its ``Engine`` announces finished calls (and streamed calls with chunks
waiting) on a file descriptor that the running event loop watches
(``loop.add_reader``).

Both clients speak OpenAI's surface over protocol v2:
``chat.completions.create`` and ``completions.create`` (``stream=True``
returns a ``Stream``/``AsyncStream`` of chunks), ``embeddings.create``,
``models.list`` and the generic ``request(method, path, json=...)`` for any
other endpoint of the upstream.
"""

import asyncio
import os
import threading
import weakref
from typing import Any, Dict, List, Optional, Union

from . import _core
from .memory_lock import checked
from .errors import InvalidRequestError, SecurityError
from .streams import AsyncStream, Stream

__all__ = ["Client", "AsyncClient", "SecureChatCompletion"]

# Keyword arguments of create() that are per-call options, not request members.
_CALL_OPTIONS = ("security_tier", "api_key", "base_url")

# The endpoints (docs/protocol-v2.md "Endpoints and streaming"). Chat
# completions is the core's default path (None): the one v1 also serves.
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"


def _options(options: Dict[str, Any]) -> Dict[str, Any]:
    """The per-call options that were given (None means the client's own)."""
    return {k: v for k, v in options.items() if v is not None}


def _split_fields(fields: Dict[str, Any], kwargs: Dict[str, Any]):
    """The request dict (`fields`, then the other keyword arguments) and the
    per-call overrides, from a create() call's arguments."""
    overrides = _options({k: kwargs.pop(k) for k in _CALL_OPTIONS if k in kwargs})
    request = dict(fields)
    request.update(kwargs)
    return request, overrides


def _split(model: Any, messages: Any, kwargs: Dict[str, Any]):
    """The chat request dict and the per-call overrides, from create()'s arguments."""
    return _split_fields({"model": model, "messages": messages}, kwargs)


def _wants_stream(request: Dict[str, Any]) -> bool:
    return bool(request.get("stream"))


def _check_streamable(method: str) -> None:
    if method != "POST":
        raise ValueError("only a POST can be streamed, not %s" % method)


class _Resource:
    """A namespace of endpoint methods: ``client.chat.completions``, ``client.models``, ..."""

    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


def _resources(client: Any) -> None:
    """OpenAI's namespaces on `client`, bound to its create/request methods."""
    client.chat = _Resource(completions=_Resource(create=client.create))
    client.completions = _Resource(create=client._create_completion)
    client.embeddings = _Resource(create=client._create_embedding)
    client.models = _Resource(list=client._list_models)


_MODELS_DOC = """The upstream's models (``GET /v1/models``), as a Response.

    A bodyless request is sent and answered **in plaintext**, as EHBP §7.4
    requires (an encapsulated key no body authenticates could be swapped):
    its ``_metadata`` says ``"is_encrypted": false``. A model list holds no
    secret; never put anything sensitive in a bodyless request. Per-call
    options (api_key, base_url) may be given."""


class Client:
    """A synchronous client: ``client.chat.completions.create(model=..., messages=...)``.

    ``options`` are those of ``hushcall._core.Client`` (api_key, allow_http,
    timeout, connect_timeout, max_retries, security_tier, key_dir, password,
    ca_file, tls_pin, server_key_fingerprint, secure_memory,
    max_request_bytes, protocol, require_pq, v2_key_fingerprint). ``protocol``
    is ``"auto"`` (the default: v2 when the server publishes key configs,
    else v1), ``"v1"`` or ``"v2"``; ``require_pq=True`` accepts only the
    post-quantum suite (X-Wing), never a fallback or a downgrade. The GIL is released while a request is in flight, so
    one Client may be used from many threads at once.
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        self._client = _core.Client(base_url, **options)
        _resources(self)

    def create(
        self, model: Any = None, messages: Any = None, **kwargs: Any
    ) -> Union[_core.Response, Stream]:
        """A chat completion; with ``stream=True`` a ``Stream`` of
        ``chat.completion.chunk`` chunks (v2 only)."""
        request, overrides = _split(model, messages, kwargs)
        return self._send(request, None, overrides)

    def _create_completion(
        self, model: Any = None, prompt: Any = None, **kwargs: Any
    ) -> Union[_core.Response, Stream]:
        """A (legacy) text completion; with ``stream=True`` a ``Stream`` (v2 only)."""
        request, overrides = _split_fields({"model": model, "prompt": prompt}, kwargs)
        return self._send(request, COMPLETIONS_PATH, overrides)

    def _create_embedding(self, model: Any = None, input: Any = None, **kwargs: Any) -> _core.Response:
        """Embeddings of `input` (v2 only)."""
        request, overrides = _split_fields({"model": model, "input": input}, kwargs)
        return checked(self._client.complete(request, path=EMBEDDINGS_PATH, **overrides))

    def _list_models(self, **call_options: Any) -> _core.Response:
        return self.request("GET", MODELS_PATH, **call_options)

    _list_models.__doc__ = _MODELS_DOC

    def _send(self, request: Dict[str, Any], path: Optional[str], overrides: Dict[str, Any]):
        if _wants_stream(request):
            return Stream(self._client.stream(request, path=path, **overrides))
        return checked(self._client.complete(request, path=path, **overrides))

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        stream: bool = False,
        **call_options: Any,
    ) -> Union[_core.Response, Stream]:
        """Any endpoint of the upstream: ``request("POST", "/v1/...", json={...})``.

        A POST's `json` (a dict, or a SecureBuffer, which is consumed) is
        sealed as chat completions are (protocol v2); a GET has no body and
        is sent and answered in plaintext (EHBP §7.4). With ``stream=True``
        the answer is a ``Stream`` of chunks: the body should then say
        ``"stream": true`` itself. ``call_options``: api_key,
        security_tier, base_url.
        """
        method = method.upper()
        options = _options(call_options)
        if stream:
            _check_streamable(method)
            return Stream(self._client.stream(json, path=path, **options))
        return checked(self._client.complete(json, path=path, method=method, **options))

    def public_key_pem(self) -> str:
        return self._client.public_key_pem()

    def close(self) -> None:
        """Nothing to release early; present for symmetry with AsyncClient."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _settle(fut: "asyncio.Future", call: "_core.Call") -> None:
    """Resolve `fut` from a finished `call` (on the future's own loop)."""
    if fut.done():
        return
    try:
        result = call.result()
    except BaseException as e:  # the mapped hushcall exception
        fut.set_exception(e)
    else:
        fut.set_result(result)


def _run_on(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
    """Run fn(*args) on `loop`: now when it is the running loop, else soon
    (nothing when that loop is closed)."""
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if loop is current:
        fn(*args)
    elif not loop.is_closed():
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed meanwhile
            pass


class AsyncClient:
    """An asyncio client: ``await client.chat.completions.create(model=..., messages=...)``.

    Calls run on one ``_core.Engine`` per AsyncClient, created on first use.
    The engine's file descriptor is registered with each running loop that
    uses the client; when it is readable, finished calls are drained and
    their futures resolved, and streams with chunks waiting are woken.
    Cancelling the awaiting task cancels the call (and ends its stream).
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        self._client = _core.Client(base_url, **options)
        self._engine: Optional[_core.Engine] = None
        self._lock = threading.Lock()
        self._futures: Dict[_core.Call, asyncio.Future] = {}
        # Weak: an abandoned AsyncStream is collected, and cancels its call.
        self._streams: "weakref.WeakValueDictionary[_core.Call, AsyncStream]" = (
            weakref.WeakValueDictionary()
        )
        self._loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
        self._closed = False
        _resources(self)

    # -- the engine and the loops watching it --

    def _engine_for(self, loop: asyncio.AbstractEventLoop) -> _core.Engine:
        with self._lock:
            if self._closed:
                raise RuntimeError("this AsyncClient is closed")
            if self._engine is None:
                self._engine = _core.Engine()
            engine = self._engine
            if loop not in self._loops:
                loop.add_reader(engine.fileno(), self._on_readable)
                self._loops.add(loop)
        return engine

    def _on_readable(self) -> None:
        with self._lock:
            engine = self._engine
            if engine is None:
                return
            drained = engine.drain()
            done = [(call, self._futures.pop(call, None)) for call in drained]
            streams = [self._streams.get(call) for call in drained]
        for call, fut in done:
            if fut is not None:  # None: a stream, or cancelled (nobody waits for it)
                _run_on(fut.get_loop(), _settle, fut, call)
        for stream in streams:
            if stream is not None:
                _run_on(stream.loop, stream.wake)

    def _forget_stream(self, call: "_core.Call") -> None:
        with self._lock:
            self._streams.pop(call, None)

    # -- requests --

    async def create(
        self, model: Any = None, messages: Any = None, **kwargs: Any
    ) -> Union[_core.Response, AsyncStream]:
        """A chat completion; with ``stream=True`` an ``AsyncStream`` of
        ``chat.completion.chunk`` chunks (v2 only)."""
        request, overrides = _split(model, messages, kwargs)
        return await self._send(request, None, overrides)

    acreate = create

    async def _create_completion(
        self, model: Any = None, prompt: Any = None, **kwargs: Any
    ) -> Union[_core.Response, AsyncStream]:
        """A (legacy) text completion; with ``stream=True`` an ``AsyncStream`` (v2 only)."""
        request, overrides = _split_fields({"model": model, "prompt": prompt}, kwargs)
        return await self._send(request, COMPLETIONS_PATH, overrides)

    async def _create_embedding(
        self, model: Any = None, input: Any = None, **kwargs: Any
    ) -> _core.Response:
        """Embeddings of `input` (v2 only)."""
        request, overrides = _split_fields({"model": model, "input": input}, kwargs)
        return await self._answer(request, dict(overrides, path=EMBEDDINGS_PATH))

    async def _list_models(self, **call_options: Any) -> _core.Response:
        return await self.request("GET", MODELS_PATH, **call_options)

    _list_models.__doc__ = _MODELS_DOC

    async def _send(self, request: Dict[str, Any], path: Optional[str], overrides: Dict[str, Any]):
        if _wants_stream(request):
            return self._open_stream(request, dict(overrides, path=path))
        return await self._answer(request, dict(overrides, path=path))

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        stream: bool = False,
        **call_options: Any,
    ) -> Union[_core.Response, AsyncStream]:
        """Any endpoint of the upstream, as ``Client.request``; a stream is an
        ``AsyncStream``."""
        method = method.upper()
        options = dict(_options(call_options), path=path)
        if stream:
            _check_streamable(method)
            return self._open_stream(json, options)
        return await self._answer(json, dict(options, method=method))

    async def _answer(self, request: Any, submit_options: Dict[str, Any]) -> _core.Response:
        """Submit one call and await its whole answer."""
        loop = asyncio.get_running_loop()
        engine = self._engine_for(loop)
        fut = loop.create_future()
        with self._lock:
            call = engine.submit(self._client, request, **submit_options)
            self._futures[call] = fut
        try:
            return checked(await fut)
        except asyncio.CancelledError:
            with self._lock:
                self._futures.pop(call, None)
            call.cancel()
            raise

    def _open_stream(self, request: Any, submit_options: Dict[str, Any]) -> AsyncStream:
        """Submit one streamed call; its chunks come through the returned AsyncStream."""
        loop = asyncio.get_running_loop()
        engine = self._engine_for(loop)
        with self._lock:
            call = engine.submit(self._client, request, stream=True, **submit_options)
            stream = AsyncStream(call, loop, self._forget_stream)
            self._streams[call] = stream
        return stream

    def public_key_pem(self) -> str:
        return self._client.public_key_pem()

    # -- shutting down --

    def close(self) -> None:
        """Stop watching the engine, cancel the calls in flight (their awaiters get
        CallCancelledError, as do streams' next chunks) and stop the engine's
        threads. Idempotent."""
        with self._lock:
            self._closed = True
            engine, self._engine = self._engine, None
            loops = list(self._loops)
            self._loops = weakref.WeakSet()
            pending = list(self._futures.items())
            self._futures.clear()
            streams = list(self._streams.values())
        if engine is None:
            return
        fd = engine.fileno()
        for loop in loops:
            if not loop.is_closed():
                try:
                    loop.remove_reader(fd)
                except (RuntimeError, ValueError):
                    pass
        engine.close()  # cancels and waits, GIL released
        for call, fut in pending:
            _run_on(fut.get_loop(), _settle, fut, call)
        for stream in streams:
            _run_on(stream.loop, stream.wake)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            try:
                self.close()
            except Exception:
                pass


class SecureChatCompletion:
    """The ``nomyo`` package's client, on hushcall:

    .. code-block:: python

        client = SecureChatCompletion(base_url="https://api.nomyo.ai", api_key=key)
        resp = await client.create(model="Qwen/Qwen3-0.6B",
                                   messages=[{"role": "user", "content": "hi"}],
                                   security_tier="high")
        resp["choices"][0]["message"]["content"]

    ``create`` and ``acreate`` are the same coroutine; ``security_tier``,
    ``api_key`` and ``base_url`` may be given per call. Further keyword
    arguments of the constructor go to ``AsyncClient``; the protocol is always
    v1 (NOMYO's), whatever ``protocol`` says. ``generate_keys`` and
    ``load_keys`` (coroutines here; methods of nomyo's inner
    ``SecureCompletionClient`` there) replace the client's key.
    """

    def __init__(
        self,
        base_url: str = "https://api.nomyo.ai",
        allow_http: bool = False,
        api_key: Optional[str] = None,
        secure_memory: bool = True,
        key_dir: Optional[str] = None,
        max_retries: int = 2,
        **options: Any,
    ) -> None:
        self.base_url = base_url
        self._options = dict(
            allow_http=allow_http,
            api_key=api_key,
            secure_memory=secure_memory,
            max_retries=max_retries,
            **options,
        )
        self._options["protocol"] = "v1"  # nomyo's interface speaks nomyo's protocol
        self._client = AsyncClient(base_url, key_dir=key_dir, **self._options)

    # -- keys (nomyo's SecureCompletionClient.generate_keys / load_keys) --

    def _use_key(self, key: "_core.KeyPair") -> None:
        """Rebuild the underlying client around `key` and close the old one."""
        options = dict(self._options)
        options.pop("key_dir", None)
        options.pop("password", None)
        options["client_key"] = key
        new = AsyncClient(self.base_url, **options)
        old, self._client = self._client, new
        old.close()

    async def generate_keys(
        self,
        save_to_file: bool = False,
        key_dir: str = "client_keys",
        password: Optional[str] = None,
    ) -> None:
        """Generate a new RSA key pair for this client (nomyo's ``generate_keys``).

        The key has ``key_bits`` bits when that option was given to the
        constructor, else 4096 (as nomyo). With ``save_to_file`` it is written
        to ``key_dir/private_key.pem`` (0600, PKCS#8, encrypted when a
        ``password`` is given) and ``key_dir/public_key.pem`` (0644), the
        layout nomyo uses, so either client can load the other's keys.
        Generation and saving run in the loop's default executor.

        Differences from nomyo: the files are written atomically and
        ``key_dir`` is created 0700 (nomyo: ``os.makedirs`` with the umask);
        a symlinked ``key_dir`` is refused with ``SecurityError``; the
        password-protected key uses PBKDF2-HMAC-SHA256 (600,000 iterations)
        with AES-256-CBC. Existing key files are replaced, as nomyo does.
        The client is rebuilt around the new key: calls still in flight on
        the previous one are cancelled (``CallCancelledError``).
        """
        bits = self._options.get("key_bits") or 4096

        def work() -> "_core.KeyPair":
            key = _core.KeyPair.generate(bits)
            if save_to_file:
                parent = os.path.dirname(os.path.abspath(key_dir))
                os.makedirs(parent, exist_ok=True)
                key.save(key_dir, password, overwrite=True)
            return key

        key = await asyncio.get_running_loop().run_in_executor(None, work)
        self._use_key(key)

    async def load_keys(
        self,
        private_key_path: str,
        public_key_path: Optional[str] = None,
        password: Optional[str] = None,
    ) -> None:
        """Load this client's RSA key from a PEM file (nomyo's ``load_keys``).

        ``private_key_path`` is a PKCS#8 (or traditional RSA) private key,
        encrypted or not; the public half is derived from it. Loading runs
        in the loop's default executor (a password derivation takes a while).

        Differences from nomyo:

        * a private key file that is a symlink, is not owned by you, or is
          readable or writable by group or others is refused with
          ``SecurityError`` whose message gives the fix (``chmod 600 <path>``),
          as ssh refuses one; nomyo reads it anyway;
        * a missing or wrong password, or a key that is not RSA of at least
          2048 bits, raises ``SecurityError`` (nomyo: ``ValueError``);
        * ``public_key_path``, when given, must hold the public half of the
          private key (``SecurityError`` otherwise); nomyo would send
          whatever it holds as the client's public key.

        The client is rebuilt around the key: calls still in flight on the
        previous one are cancelled (``CallCancelledError``).
        """

        def work() -> "_core.KeyPair":
            key = _core.KeyPair.load(private_key_path, password)
            if public_key_path:
                with open(public_key_path, "r") as f:
                    given = f.read()
                if "".join(given.split()) != "".join(key.public_pem().split()):
                    raise SecurityError(
                        "%s is not the public half of %s" % (public_key_path, private_key_path)
                    )
            return key

        key = await asyncio.get_running_loop().run_in_executor(None, work)
        self._use_key(key)

    async def create(self, model: str, messages: List[Dict[str, Any]], **kwargs: Any) -> _core.Response:
        """A chat completion over NOMYO's protocol (v1), which cannot stream:
        ``stream=True`` is refused (InvalidRequestError) with nothing sent.
        Stream with ``AsyncClient`` over protocol v2."""
        if kwargs.get("stream"):
            raise InvalidRequestError(
                "SecureChatCompletion speaks NOMYO's protocol (v1), which cannot stream: "
                "use AsyncClient (protocol v2) for stream=True",
                status_code=None,
            )
        return await self._client.create(model, messages, **kwargs)

    acreate = create

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        self._client.close()

    async def __aenter__(self) -> "SecureChatCompletion":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()
