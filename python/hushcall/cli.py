"""``python -m hushcall``: ``serve`` runs the reference gateway, ``chat`` sends
one encrypted completion to an endpoint (docs/gateway.md), ``attest enroll``
enrols a gateway's AIK and writes the policy pinning it (docs/attestation.md)."""

import argparse
import ipaddress
import json
import os
import sys
import time
import urllib.parse
from typing import Any, List, Optional

from . import gateway, keyring, replay
from .errors import HushcallError

API_KEY_ENV = "HUSHCALL_API_KEY"
REPLAY_STORE_ENV = "HUSHCALL_REPLAY_STORE"  # its URL may hold Redis's password


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _echo_delay(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 60000:
        raise argparse.ArgumentTypeError("must be from 0 to 60000")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535")
    return value


def _backend(text: str) -> str:
    kind, _, url = text.partition(":")
    if text == "echo" or (kind == "openai" and url.startswith(("http://", "https://"))):
        return text
    raise argparse.ArgumentTypeError("expected echo or openai:http(s)://host[:port]/v1")


def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="run the reference gateway",
                            description="Run the NOMYO-compatible reference gateway.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=gateway.DEFAULT_PORT,
                   help="port (0: a free one; default %(default)s)")
    p.add_argument("--backend", type=_backend, default="echo",
                   help="echo (default) or openai:URL of an OpenAI-compatible /v1 base")
    p.add_argument("--key-dir", default=gateway.DEFAULT_KEY_DIR,
                   help="where the server key is kept (default %(default)s)")
    p.add_argument("--api-key", action="extend", nargs="+", default=[],
                   help="accepted bearer tokens (default: no authentication); visible to "
                        "local users in the process list: prefer --api-key-file")
    p.add_argument("--api-key-file", metavar="PATH",
                   help="accepted bearer tokens, one a line (blank lines and # comments "
                        "left out), in a file only its owner may read (chmod 600); reread on "
                        "SIGHUP; with --api-key, both are accepted")
    p.add_argument("--tls-cert", help="PEM certificate chain to serve https with")
    p.add_argument("--tls-key", help="its PEM private key")
    p.add_argument("--rate-limit", type=_positive_float,
                   help="requests per second per API key (default: no limit)")
    p.add_argument("--rate-burst", type=_positive_int, help="bucket size (default: the rate)")
    p.add_argument("--max-body-bytes", type=_positive_int, default=gateway.DEFAULT_MAX_BODY_BYTES,
                   help="largest request body (default %(default)s)")
    p.add_argument("--max-in-flight", type=_positive_int, default=gateway.DEFAULT_MAX_IN_FLIGHT,
                   help="requests being read or answered at once before 503 "
                        "(default %(default)s)")
    _add_limits(p)
    _add_replay_store(p)
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--upstream-timeout", type=_positive_float,
                   help="seconds for an upstream answer (default 300)")
    p.add_argument("--upstream-ca-file", help="PEM bundle to verify an https upstream with")
    p.add_argument("--allow-http-upstream", action="store_true",
                   help="allow a plain http:// upstream that is not loopback (every request "
                        "then crosses the network in clear)")
    p.add_argument("--workers", type=_positive_int,
                   help="threads answering requests (default: CPUs for echo, 32 for openai)")
    p.add_argument("--tpm", metavar="TCTI",
                   help="quote answers with this TPM, e.g. device:/dev/tpmrm0 or "
                        "swtpm:host=127.0.0.1,port=2321: those of the high and maximum tiers "
                        "and those asked for with X-Attestation: required")
    p.add_argument("--tpm-pcrs", help="PCRs to quote (default sha256:0,7,10)")
    p.add_argument("--tpm-key-alg", choices=("ecc", "rsa"), default="ecc",
                   help="type of the fresh attestation key made per quote (default ecc)")
    p.add_argument("--tpm-quotes-per-second", type=_positive_float,
                   default=gateway.DEFAULT_TPM_QUOTES_PER_SECOND,
                   help="quotes the TPM makes a second before 503 (default %(default)s)")
    p.add_argument("--tpm-handle", type=lambda text: int(text, 0), default=0,
                   help="quote with the persistent key at this handle (0x81...) instead")
    p.add_argument("--shutdown-timeout", type=_positive_float, default=30.0,
                   help="seconds the requests in flight get on shutdown (default %(default)s)")
    p.add_argument("--replay-window", type=_positive_float, default=replay.DEFAULT_WINDOW,
                   help="seconds an answered request is remembered, so that the same body "
                        "sent again under another key is refused (default %(default)s)")
    p.add_argument("--replay-max-entries", type=_positive_int,
                   default=replay.DEFAULT_MAX_ENTRIES,
                   help="requests remembered at most, about 48 bytes each; past it the "
                        "oldest are forgotten first (default %(default)s)")
    _add_scale(p)


def _add_scale(p) -> None:
    """Several processes, and gateways sharing one key directory (docs/operations.md)."""
    p.add_argument("--processes", type=_positive_int, default=1,
                   help="worker processes serving the port, restarted when they die "
                        "(default %(default)s)")
    p.add_argument("--key-publish-lead", type=_positive_float,
                   help="seconds a next v2 key is on disk before it is published, for "
                        "gateways sharing the key directory to read it (default: 60, at most "
                        "half of key lifetime minus overlap)")


def _add_replay_store(p) -> None:
    """The replay stores shared in Redis (docs/operations.md, "A shared replay store")."""
    p.add_argument("--replay-store", metavar="URL",
                   help="keep the v1 and v2 replay stores in Redis (redis://HOST:PORT/DB or "
                        "rediss://...), shared by every gateway using it; a password is better "
                        "given in HUSHCALL_REPLAY_STORE, read and removed from the environment "
                        "(default: this process's own)")
    p.add_argument("--replay-store-fail-open", action="store_true",
                   help="while Redis does not answer, answer requests without the replay "
                        "check instead of 503 (logged, counted; a replay may then be answered)")
    p.add_argument("--replay-store-timeout", type=_positive_float,
                   default=replay.DEFAULT_STORE_TIMEOUT,
                   help="seconds to wait for Redis per call (default %(default)s)")


def _add_limits(p) -> None:
    """What slow or oversized clients may hold (docs/gateway.md, "Limits")."""
    p.add_argument("--max-buffered-bytes", type=_positive_int,
                   default=gateway.DEFAULT_MAX_BUFFERED_BYTES,
                   help="request body bytes held across all requests before 503 "
                        "(default %(default)s)")
    p.add_argument("--header-timeout", type=_positive_float, default=gateway.DEFAULT_HEADER_TIMEOUT,
                   help="seconds for a request head to arrive (default %(default)s)")
    p.add_argument("--body-timeout", type=_positive_float, default=gateway.DEFAULT_BODY_TIMEOUT,
                   help="seconds for a whole request body to arrive (default %(default)s)")
    p.add_argument("--no-v2", dest="v2", action="store_false",
                   help="serve protocol v1 only (no /v1/chat/completions, no v2 keys)")
    p.add_argument("--v2-key-dir",
                   help="where the v2 key ring is kept (default: v2-keys inside --key-dir)")
    p.add_argument("--key-lifetime", type=_positive_float, default=keyring.DEFAULT_KEY_LIFETIME,
                   help="seconds each v2 key is accepted (default %(default)s)")
    p.add_argument("--key-overlap", type=_positive_float, default=keyring.DEFAULT_KEY_OVERLAP,
                   help="seconds the next v2 key is published before the current one expires "
                        "(default %(default)s)")
    p.add_argument("--max-connections-per-ip", type=_positive_int,
                   default=gateway.DEFAULT_MAX_CONNECTIONS_PER_IP,
                   help="open connections from one address (default %(default)s)")
    p.add_argument("--echo-delay-ms", type=_echo_delay, default=0,
                   help="echo: milliseconds between the words of a streamed answer, so "
                        "streaming is visible (default 0)")
    p.add_argument("--allow-plaintext", action="store_true",
                   help="answer POSTs without Ehbp-Encapsulated-Key in plaintext, through the "
                        "same backend: for benchmarks only, never for real traffic")
    # Metrics (docs/operations.md "Metrics").
    p.add_argument("--metrics-port", type=_port,
                   help="serve /metrics on this port of 127.0.0.1 only, without an API key "
                        "(0: any free port), and not on the main port; by default /metrics "
                        "is on the main port for callers with an --api-key")


def _replay_store_url(args: argparse.Namespace,
                      parser: argparse.ArgumentParser) -> Optional[str]:
    from_env = gateway.take_secret_env(REPLAY_STORE_ENV)  # removed whichever is used
    url = args.replay_store or from_env
    if url is not None and urllib.parse.urlsplit(url).scheme not in ("redis", "rediss"):
        parser.error("--replay-store must be a redis:// or rediss:// URL")
    if url is None and args.replay_store_fail_open:
        parser.error("--replay-store-fail-open needs --replay-store")
    return url


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    config = gateway.GatewayConfig(
        host=args.host, port=args.port, backend=args.backend, key_dir=args.key_dir,
        api_keys=args.api_key, api_key_file=args.api_key_file,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
        rate_limit=args.rate_limit, rate_burst=args.rate_burst,
        max_body_bytes=args.max_body_bytes, max_in_flight=args.max_in_flight,
        max_buffered_bytes=args.max_buffered_bytes, header_timeout=args.header_timeout,
        body_timeout=args.body_timeout, max_connections_per_ip=args.max_connections_per_ip,
        log_format=args.log_format,
        upstream_timeout=args.upstream_timeout, upstream_ca_file=args.upstream_ca_file,
        allow_http_upstream=args.allow_http_upstream,
        workers=args.workers, shutdown_timeout=args.shutdown_timeout, tpm=args.tpm,
        tpm_pcrs=args.tpm_pcrs, tpm_key_alg=args.tpm_key_alg, tpm_handle=args.tpm_handle,
        replay_window=args.replay_window, replay_max_entries=args.replay_max_entries,
        tpm_quotes_per_second=args.tpm_quotes_per_second, v2=args.v2,
        v2_key_dir=args.v2_key_dir, key_lifetime=args.key_lifetime,
        key_overlap=args.key_overlap, echo_delay_ms=args.echo_delay_ms,
        allow_plaintext=args.allow_plaintext,
        metrics_port=args.metrics_port,
        replay_store=_replay_store_url(args, parser),
        replay_store_fail_open=args.replay_store_fail_open,
        replay_store_timeout=args.replay_store_timeout,
        processes=args.processes, key_publish_lead=args.key_publish_lead)
    try:
        gateway.run(config)
    except (HushcallError, OSError) as e:
        # A key that will not load, a port in use: say so, without a traceback.
        print("hushcall serve: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


def _add_chat(commands) -> None:
    p = commands.add_parser("chat", help="send one encrypted chat completion",
                            description="Send one encrypted chat completion and print the reply.")
    p.add_argument("question", help="the user message ('-' reads it from stdin)")
    p.add_argument("--base-url", required=True, help="the endpoint, e.g. https://host")
    p.add_argument("--api-key", help="bearer token (default $%s)" % API_KEY_ENV)
    p.add_argument("--model", default="default", help="model name (default %(default)s)")
    p.add_argument("--tier", choices=("standard", "high", "maximum"), help="X-Security-Tier")
    p.add_argument("--system", help="a system message to send first")
    p.add_argument("--ca-file", help="PEM bundle to verify the endpoint with")
    p.add_argument("--allow-http", action="store_true",
                   help="permit http:// to a host that is not loopback")
    p.add_argument("--key-dir", help="client key directory (default: a fresh key)")
    p.add_argument("--timeout", type=_positive_float, help="seconds for the whole request")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    p.add_argument("--stream", action="store_true",
                   help="print the answer as it is made (protocol v2; with --json: each "
                        "chunk as a JSON line)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print _metadata and timings on stderr")


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _print_stream(chunks: Any, as_json: bool) -> None:
    """Each chunk's text as it comes (or the chunk as a JSON line), each chunk
    wiped once printed."""
    for chunk in chunks:
        with chunk:
            if as_json:
                print(json.dumps(chunk.to_dict(), ensure_ascii=False), flush=True)
            elif chunk.choices:
                print(chunk.choices[0].delta.get("content") or "", end="", flush=True)
    if not as_json:
        print()


def _chat(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .client import Client  # the extension only when it is needed

    question = sys.stdin.read() if args.question == "-" else args.question
    messages = [{"role": "user", "content": question}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    options = {"allow_http": args.allow_http or _is_loopback(args.base_url)}
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    for name, value in (("api_key", api_key), ("ca_file", args.ca_file),
                        ("key_dir", args.key_dir), ("timeout", args.timeout),
                        ("security_tier", args.tier)):
        if value is not None:
            options[name] = value
    start = time.monotonic()
    try:
        client = Client(args.base_url, **options)
        if args.stream:
            with client.create(model=args.model, messages=messages, stream=True) as chunks:
                _print_stream(chunks, args.json)
            return 0
        with client.create(model=args.model, messages=messages) as answer:
            elapsed = (time.monotonic() - start) * 1000
            if args.json:
                print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
            else:
                print(answer["choices"][0]["message"]["content"])
            if args.verbose:
                print("_metadata: " + json.dumps(answer["_metadata"].to_dict(), indent=2),
                      file=sys.stderr)
                print("round trip: %.1f ms" % elapsed, file=sys.stderr)
    except HushcallError as e:
        print("hushcall chat: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


def _add_attest(commands) -> None:
    p = commands.add_parser("attest", help="TPM attestation of a gateway",
                            description="TPM attestation of a gateway (docs/attestation.md).")
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser(
        "enroll", help="enrol a gateway's AIK by its TPM's EK certificate",
        description="Prove the gateway's AIK lives in the TPM its EK certificate names, "
                    "then write a policy pinning that AIK and the PCR values it quoted.")
    e.add_argument("url", help="the gateway, e.g. https://host (http:// for loopback only)")
    e.add_argument("--ek-ca", required=True,
                   help="PEM file of the EK CAs to trust (self-signed ones are the anchors)")
    e.add_argument("--out", required=True, help="the policy file to write")
    e.add_argument("--cacert", help="PEM bundle to verify the gateway's TLS with")
    e.add_argument("--timeout", type=_positive_float, default=30.0,
                   help="seconds for each request (default %(default)s)")
    e.add_argument("--force", action="store_true", help="replace --out if it exists")


def _attest_enroll(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import enroll  # the extension only when it is needed

    try:
        if os.path.lexists(args.out) and not args.force:
            raise enroll.EnrolmentError("%s exists (--force replaces it)" % args.out)
        policy = enroll.enroll(args.url, args.ek_ca, cacert=args.cacert, timeout=args.timeout,
                               allow_http=_is_loopback(args.url))
        enroll.write_policy(policy, args.out, force=args.force)
    except enroll.EnrolmentError as e:
        print("hushcall attest enroll: %s" % e, file=sys.stderr)
        return 1
    print("enrolled %s; policy written to %s" % (policy["aik_fingerprints"][0], args.out))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hushcall", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_chat(commands)
    _add_attest(commands)
    args = parser.parse_args(argv)
    handlers = {"serve": _serve, "chat": _chat, "attest": _attest_enroll}
    return handlers[args.command](args, parser)
