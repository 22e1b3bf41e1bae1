"""Enrolling a gateway's AIK by its TPM's endorsement key
(docs/attestation.md "Enrolling an AIK"): fetch the EK certificate and the
AIK's public area, have the gateway's TPM activate a credential made for
them, then check a fresh key-config attestation with the AIK just proven,
and write the policy that pins it. Used by ``python -m hushcall attest
enroll``; every failure is an EnrolmentError with a one-line reason."""

import base64
import binascii
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Optional

from . import _core
from .errors import HushcallError

ENROLLMENT_PATH = "/.well-known/hushcall-attestation/enrollment"
ACTIVATION_PATH = "/.well-known/hushcall-attestation/activation"
ATTESTATION_PATH = "/.well-known/hushcall-attestation"
NONCE_BYTES = 32
MAX_ANSWER_BYTES = 1 << 20  # the answers are a few KiB
MAX_DETAIL_CHARS = 200


class EnrolmentError(Exception):
    """Enrolment failed; str() is the one-line reason."""


class _Gateway:
    """The gateway's three endpoints over urllib: https (verified), or
    http:// where the caller allows it (loopback)."""

    def __init__(self, url: str, cacert: Optional[str], timeout: float, allow_http: bool):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise EnrolmentError("the URL must be https://host[:port]")
        if parts.scheme == "http" and not allow_http:
            raise EnrolmentError("http:// is allowed for loopback hosts only")
        self.base = url.rstrip("/")
        self.timeout = timeout
        try:
            self.context = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as e:
            raise EnrolmentError("--cacert cannot be loaded: %s" % e) from None

    def get(self, path: str) -> Dict[str, Any]:
        return self._json(urllib.request.Request(self.base + path), "GET " + path)

    def post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        request = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        return self._json(request, "POST " + path)

    def _json(self, request: urllib.request.Request, what: str) -> Dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.context) as answer:
                data = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise EnrolmentError("%s: HTTP %d%s" % (what, e.code, _detail(e))) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EnrolmentError("%s: %s" % (what, reason)) from None
        if len(data) > MAX_ANSWER_BYTES:
            raise EnrolmentError("%s: the answer is too large" % what)
        try:
            value = json.loads(data)
        except ValueError:
            raise EnrolmentError("%s: the answer is not JSON" % what) from None
        if not isinstance(value, dict):
            raise EnrolmentError("%s: the answer is not a JSON object" % what)
        return value


def _detail(error: urllib.error.HTTPError) -> str:
    """': <detail>' from a JSON error answer, on one line and short."""
    try:
        detail = json.loads(error.read(MAX_ANSWER_BYTES)).get("detail")
    except (ValueError, AttributeError, OSError):
        return ""
    if not isinstance(detail, str):
        return ""
    return ": " + " ".join(detail.split())[:MAX_DETAIL_CHARS]


def _b64_member(answer: Dict[str, Any], name: str, what: str) -> bytes:
    value = answer.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise EnrolmentError("%s: \"%s\" is not base64" % (what, name)) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prove_aik(gateway: _Gateway, ek_ca: str) -> str:
    """The AIK's fingerprint, once the gateway's TPM has activated a
    credential made for it to the certified EK."""
    what = "GET " + ENROLLMENT_PATH
    answer = gateway.get(ENROLLMENT_PATH)
    ek_certificate = _b64_member(answer, "ek_certificate", what)
    aik_public = _b64_member(answer, "aik_public", what)
    try:
        enrolment = _core.Enrolment(ek_certificate, ek_ca, aik_public)
    except HushcallError as e:
        raise EnrolmentError(str(e)) from None
    what = "POST " + ACTIVATION_PATH
    answer = gateway.post(ACTIVATION_PATH, {"id_object": _b64(enrolment.id_object),
                                            "encrypted_secret": _b64(enrolment.encrypted_secret)})
    secret = _b64_member(answer, "secret", what)
    try:
        enrolment.finish(secret)
    except HushcallError as e:
        raise EnrolmentError(str(e)) from None
    return enrolment.aik_fingerprint


def _attested_pcrs(gateway: _Gateway, fingerprint: str) -> Dict[str, Any]:
    """The PCR values of a key-config attestation made for a fresh nonce and
    verified with a policy pinning `fingerprint` only."""
    nonce = os.urandom(NONCE_BYTES)
    path = ATTESTATION_PATH + "?nonce=" + nonce.hex()
    what = "GET " + ATTESTATION_PATH
    answer = gateway.get(path)
    configs = _b64_member(answer, "key_configs", what)
    attestation = answer.get("tpm_attestation")
    if not isinstance(attestation, dict) or not configs:
        raise EnrolmentError("%s: no key_configs or tpm_attestation" % what)
    pin = json.dumps({"aik_fingerprints": [fingerprint]})
    try:
        qualifying = _core.attest_key_config_qualifying(nonce, configs)
        verdict = _core.attest_verify_bound(json.dumps(attestation), qualifying, pin)
    except HushcallError as e:
        raise EnrolmentError("%s: %s" % (what, e)) from None
    if not verdict["verified"]:
        raise EnrolmentError("the key-config attestation does not verify with the enrolled "
                             "AIK: %s" % verdict["reason"])
    return attestation["pcr_values"]


def enroll(url: str, ek_ca: str, *, cacert: Optional[str] = None, timeout: float = 30.0,
           allow_http: bool = False) -> Dict[str, Any]:
    """The policy for the gateway at `url`: its AIK, proven by its TPM's EK
    certificate chaining to the CAs in `ek_ca`, and the PCR values a quote
    by that AIK showed."""
    gateway = _Gateway(url, cacert, timeout, allow_http)
    fingerprint = _prove_aik(gateway, ek_ca)
    return {"aik_fingerprints": [fingerprint], "pcrs": _attested_pcrs(gateway, fingerprint)}


def write_policy(policy: Dict[str, Any], path: str, *, force: bool = False) -> None:
    """Write `policy` to `path` atomically (0644): staged in the same
    directory, synced, then linked (or with `force` renamed) into place, so
    a reader sees the whole old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    data = (json.dumps(policy, indent=2, sort_keys=True) + "\n").encode()
    try:
        fd, staged = tempfile.mkstemp(dir=directory, prefix=".policy-", suffix=".tmp")
    except OSError as e:
        raise EnrolmentError("cannot write in %s: %s" % (directory, e.strerror)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        if force:
            os.replace(staged, path)
        else:
            os.link(staged, path)  # fails if `path` exists: never an overwrite
        _sync_directory(directory)
    except FileExistsError:
        raise EnrolmentError("%s exists (--force replaces it)" % path) from None
    except OSError as e:
        raise EnrolmentError("cannot write %s: %s" % (path, e.strerror)) from None
    finally:
        if os.path.exists(staged):
            os.unlink(staged)


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
