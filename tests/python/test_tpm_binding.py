"""hushcall._core.Tpm's enrolment and v2 quote methods against swtpm, each
result checked against what tpm2-tools reads or makes from the same TPM
(tpm2_nvread, tpm2_readpublic, tpm2_makecredential), not against our own
C code."""
import base64
import hashlib
import json
import os
import struct
import subprocess

import pytest

from hushcall import _core
from hushcall.errors import HushcallError, InvalidArgumentError, SecurityError
from processes import EkCa, Swtpm

AIK_HANDLE = "0x81000002"


@pytest.fixture(scope="module")
def manufactured(tmp_path_factory):
    """A swtpm with an EK certificate and a persistent AIK, and what
    tpm2-tools reads from it before the binding holds its one connection."""
    tmp = tmp_path_factory.mktemp("tpm-binding")
    tpm = Swtpm(tmp, ek_ca=EkCa(tmp))
    tpm.make_persistent_key(AIK_HANDLE)
    cert, aik, ek = (tpm.dir + "-" + n for n in ("ek.der", "aik.tss", "ek.pub"))
    tpm.tool("tpm2_nvread", "-o", cert, "0x01c00002")
    tpm.tool("tpm2_readpublic", "-Q", "-c", AIK_HANDLE, "-o", aik)
    tpm.tool("tpm2_createek", "-G", "rsa", "-c", tpm.dir + "-ek.ctx", "-u", ek)
    tpm.tool("tpm2_flushcontext", "-t")
    files = {}
    for name, path in (("cert", cert), ("aik", aik), ("ek", ek)):
        with open(path, "rb") as f:
            files[name] = f.read()
    opened = _core.Tpm(tpm.tcti, persistent_handle=int(AIK_HANDLE, 16))
    yield opened, files, tmp
    del opened
    tpm.stop()


def extra_data(quote_b64):
    """TPMS_ATTEST's extraData (Part 2 §10.12.12): after the TPM2B size,
    magic, type and the signer's TPM2B_NAME."""
    raw = base64.b64decode(quote_b64)[2:]
    (name_len,) = struct.unpack(">H", raw[6:8])
    at = 8 + name_len
    (size,) = struct.unpack(">H", raw[at:at + 2])
    return raw[at + 2:at + 2 + size]


def make_credential(tmp, ek_pub, aik_public, secret):
    """tpm2_makecredential (-T none) for the AIK's name to the EK: the two
    TPM2B blobs after the file's magic and version."""
    name = "000b" + hashlib.sha256(aik_public[2:]).hexdigest()
    paths = {n: os.path.join(str(tmp), n) for n in ("ek.pub", "secret", "cred")}
    for n, data in (("ek.pub", ek_pub), ("secret", secret)):
        with open(paths[n], "wb") as f:
            f.write(data)
    subprocess.run(["tpm2_makecredential", "-Q", "-T", "none", "-u", paths["ek.pub"], "-s",
                    paths["secret"], "-n", name, "-o", paths["cred"]], check=True)
    with open(paths["cred"], "rb") as f:
        blob = f.read()
    assert blob[:8] == bytes.fromhex("badcc0de00000001")
    id_len = 2 + struct.unpack(">H", blob[8:10])[0]
    return blob[8:8 + id_len], blob[8 + id_len:]


def test_quote_bound_quotes_the_bytes_given(manufactured):
    tpm = manufactured[0]
    for qualifying in (bytes(range(32)), b"\x01"):
        text = tpm.quote_bound(qualifying)
        assert text.startswith('{"is_available":true,')
        members = json.loads(text)
        assert list(members) == ["is_available", "pcr_banks", "pcr_values", "aik_pubkey_b64",
                                 "quote_b64", "signature_b64"]
        assert extra_data(members["quote_b64"]) == qualifying
    for bad in (b"", bytes(33)):
        with pytest.raises(InvalidArgumentError):
            tpm.quote_bound(bad)


def test_ek_certificate_and_aik_public_are_what_tpm2_tools_read(manufactured):
    tpm, files, _ = manufactured
    assert tpm.ek_certificate() == files["cert"]
    assert tpm.aik_public() == files["aik"]
    quoted = json.loads(tpm.quote_bound(b"\x02" * 32))["aik_pubkey_b64"]
    assert base64.b64decode(quoted) == files["aik"]


def test_activate_credential_gives_back_the_secret(manufactured):
    tpm, files, tmp = manufactured
    secret = os.urandom(32)
    id_object, encrypted_secret = make_credential(tmp, files["ek"], files["aik"], secret)
    assert tpm.activate_credential(id_object, encrypted_secret) == secret

    tampered = id_object[:-1] + bytes([id_object[-1] ^ 1])
    with pytest.raises(SecurityError) as refused:
        tpm.activate_credential(tampered, encrypted_secret)
    assert refused.value.kind == "auth"
    with pytest.raises(SecurityError) as junk:
        tpm.activate_credential(b"\xff\xff\x00", encrypted_secret)
    assert junk.value.kind == "format"
    # still usable after both
    assert tpm.activate_credential(id_object, encrypted_secret) == secret


def test_an_unmanufactured_tpm_with_an_ephemeral_aik(tmp_path):
    sim = Swtpm(tmp_path)
    try:
        tpm = _core.Tpm(sim.tcti)
        with pytest.raises(HushcallError) as missing:
            tpm.ek_certificate()
        assert missing.value.kind == "not_found"
        for call in (tpm.aik_public, lambda: tpm.activate_credential(b"\x00\x01a", b"\x00\x01b")):
            with pytest.raises(SecurityError) as unsupported:
                call()
            assert unsupported.value.kind == "unsupported"
        del tpm
    finally:
        sim.stop()
