"""What the gateway takes from files it may reread on SIGHUP (docs/operations.md,
"Reloading"): the clients' API keys of ``--api-key-file`` and the TLS
certificate and key of ``--tls-cert``/``--tls-key``. What does not load is
refused with a warning and what was in use stays in use; messages name the
file, never a byte of what it holds.
"""

import logging
import os
import ssl
import stat
from typing import List, Optional, Tuple

from .errors import HushcallError

__all__ = ["ApiKeyFileError", "read_api_key_file", "check_api_key_file", "labelled_api_keys",
           "before_serving", "reload"]

log = logging.getLogger("hushcall.gateway")

# A key file is a short list; anything larger is not one.
MAX_API_KEY_FILE_BYTES = 1024 * 1024


class ApiKeyFileError(HushcallError):
    """--api-key-file cannot be used: missing, unreadable, open to group or
    others, or without a key. The message names the file, never its content."""


def read_api_key_file(path: str) -> List[str]:
    """The keys of `path`: one a line, surrounding blanks stripped, blank
    lines and lines starting with # left out."""
    data = _read_private_file(path)
    keys = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            keys.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiKeyFileError("--api-key-file %s: line %d is not UTF-8" % (path, number)) \
                from None
    if not keys:
        raise ApiKeyFileError("--api-key-file %s holds no key (only blank lines and comments)"
                              % path)
    return keys


def _read_private_file(path: str) -> bytes:
    """The bytes of a regular file that only its owner may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ApiKeyFileError("--api-key-file %s: %s" % (path, e.strerror)) from None
    try:
        # The mode of what was opened, not of what the path names a moment later.
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ApiKeyFileError("--api-key-file %s is not a regular file" % path)
        if mode & 0o077:
            raise ApiKeyFileError("--api-key-file %s is open to group or others (mode %04o): "
                                  "chmod 600 it" % (path, stat.S_IMODE(mode)))
        with open(fd, "rb", closefd=False) as f:  # reads on until the size or the end
            data = f.read(MAX_API_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise ApiKeyFileError("--api-key-file %s: %s" % (path, e.strerror)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_API_KEY_FILE_BYTES:
        raise ApiKeyFileError("--api-key-file %s is larger than %d bytes"
                              % (path, MAX_API_KEY_FILE_BYTES))
    return data


def check_api_key_file(path: Optional[str]) -> None:
    """Refuse to start with an --api-key-file that would not load, before
    any key is made or worker started."""
    if path is not None:
        read_api_key_file(path)


def labelled_api_keys(command_line: List[str], path: Optional[str]) -> List[Tuple[bytes, str]]:
    """Every accepted key with its label for logs and rate limits (the keys
    themselves go nowhere else): those of --api-key first, then the file's."""
    keys = list(command_line) + (read_api_key_file(path) if path is not None else [])
    return [(key.encode(), "key#%d" % n) for n, key in enumerate(keys, start=1)]


def before_serving(*_signal_and_frame) -> None:
    """SIGHUP while keys are made or loaded, before the gateway serves (it
    would end the process): the files are read as it starts, so nothing to do."""
    log.info("SIGHUP before serving: nothing to reload")


def reload(gateway, context: Optional[ssl.SSLContext]) -> None:
    """SIGHUP: reread what came from files. Runs on the event loop's thread,
    the one that starts every TLS handshake, so no handshake sees the
    context half changed."""
    config = gateway.config
    if context is None and config.api_key_file is None:
        log.info("SIGHUP ignored: no --tls-cert or --api-key-file to reload")
        return
    if context is not None:
        reload_tls(context, config.tls_cert, config.tls_key)
    if config.api_key_file is not None:
        reload_api_keys(gateway)


def reload_tls(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load the certificate chain and key into the serving context, for new
    handshakes; connections already made keep theirs. They are tried on a
    context of their own first: loading a chain into the serving one and then
    failing on its key would leave it a certificate without a key."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key,
                                                              password=_no_password)
    except (OSError, ssl.SSLError, ValueError) as e:
        log.warning("SIGHUP: TLS certificate not reloaded, the one in use stays: "
                    "%s with %s does not load: %s", cert, key, e)
        return
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError, ValueError) as e:
        # The files changed between the two loads: a later SIGHUP loads them whole.
        log.error("SIGHUP: TLS certificate half reloaded, %s or %s changed while it "
                  "loaded: %s; send SIGHUP again", cert, key, e)
        return
    log.info("SIGHUP: TLS certificate reloaded from %s", cert)


def _no_password() -> bytes:
    """An encrypted key: refused, where OpenSSL would ask for its password on
    the terminal and hold the event loop until someone answered."""
    raise ValueError("the key is encrypted, and the gateway takes no password for it")


def reload_api_keys(gateway) -> None:
    try:
        keys = labelled_api_keys(gateway.config.api_keys, gateway.config.api_key_file)
    except ApiKeyFileError as e:
        log.warning("SIGHUP: API keys not reloaded, the %d in use stay: %s",
                    len(gateway.api_keys), e)
        return
    gateway.api_keys = keys
    log.info("SIGHUP: %d API keys in use, %d from %s", len(keys),
             len(keys) - len(gateway.config.api_keys), gateway.config.api_key_file)
