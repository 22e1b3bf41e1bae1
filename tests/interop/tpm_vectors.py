#!/usr/bin/env python3
"""tpm_vectors.py — known-answer TPM 2.0 quotes for hush_attest_verify, made
independently of hushcall: swtpm plays the TPM and tpm2-tools 5.4 drive it.

Each output file is {"payload_id": ..., "tpm_attestation": {...}} in NOMYO's
form (aik_pubkey_b64 = marshalled TPM2B_PUBLIC, quote_b64 = TPM2B_ATTEST,
signature_b64 = TPMT_SIGNATURE). The vectors are generated once and committed
under tests/c/data/attest/, so the C tests need neither swtpm nor tpm2-tools.

    python3 tests/interop/tpm_vectors.py tests/c/data/attest
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

TOOLS = ["swtpm", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_pcrread",
         "tpm2_pcrextend", "tpm2_readpublic", "tpm2_flushcontext"]

# name, key algorithm, signing scheme, PCR selection, payload id
VECTORS = [
    ("ecc_p256_ecdsa", "ecc", "ecdsa", "sha256:0,7,10", "chatcmpl-vector-ecc-0001"),
    ("rsa2048_rsassa", "rsa", "rsassa", "sha256:0,7,10", "chatcmpl-vector-rsassa-0002"),
    ("rsa2048_rsapss", "rsa", "rsapss", "sha256:0,7,10", "chatcmpl-vector-rsapss-0003"),
    ("ecc_p256_multibank", "ecc", "ecdsa", "sha1:0,16+sha256:0,7,10", "chatcmpl-vector-banks-0004"),
]

DIGEST_LEN = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


def die(msg):
    sys.stderr.write("tpm_vectors.py: %s\n" % msg)
    sys.exit(1)


def free_port_pair():
    """A port P with P and P+1 both free (swtpm's server and control ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    die("no free port pair for swtpm")


def run(args, env, cwd):
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        die("%s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p.stdout


def wait_for(port, proc):
    for _ in range(100):
        if proc.poll() is not None:
            die("swtpm exited early (%d)" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    die("swtpm did not start listening")


def parse_selection(banks):
    sel = []
    for part in banks.split("+"):
        bank, idx = part.split(":")
        sel.append((bank, sorted(int(i) for i in idx.split(","))))
    return sel


def read_pcrs(banks, env, cwd):
    """{bank: {index: hex}} from `tpm2_pcrread`'s YAML output."""
    out = run(["tpm2_pcrread", banks], env, cwd)
    values, bank = {}, None
    for line in out.splitlines():
        m = re.match(r"^\s*(sha1|sha256|sha384|sha512|sm3_256)\s*:\s*$", line)
        if m:
            bank = m.group(1)
            values[bank] = {}
            continue
        m = re.match(r"^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$", line)
        if m and bank is not None:
            values[bank][m.group(1)] = m.group(2).lower()
    for bank, idx in parse_selection(banks):
        for i in idx:
            v = values.get(bank, {}).get(str(i))
            if v is None or len(v) != 2 * DIGEST_LEN[bank]:
                die("tpm2_pcrread did not report %s:%d" % (bank, i))
    return values


def b64file(path, wrap_tpm2b=False):
    data = open(path, "rb").read()
    if wrap_tpm2b:  # tpm2_quote -m writes bare TPMS_ATTEST; NOMYO sends TPM2B_ATTEST
        data = struct.pack(">H", len(data)) + data
    return base64.b64encode(data).decode("ascii")


def make_vector(name, alg, scheme, banks, payload_id, env, work):
    d = os.path.join(work, name)
    os.mkdir(d)
    ek_alg = "ecc" if alg == "ecc" else "rsa"
    run(["tpm2_createek", "-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub"], env, d)
    run(["tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256",
         "-s", scheme, "-u", "ak.pub", "-n", "ak.name", "-f", "tss"], env, d)
    # the EK's transient handle is no longer needed; keep the TPM's slots free
    run(["tpm2_flushcontext", "-t"], env, d)
    qual = hashlib.sha256(payload_id.encode()).digest()[:16].hex()
    pcrs_before = read_pcrs(banks, env, d)
    run(["tpm2_quote", "-c", "ak.ctx", "-l", banks, "-q", qual, "-g", "sha256",
         "--scheme", scheme, "-m", "quote.msg", "-s", "quote.sig", "-f", "tss", "-o", "quote.pcrs"], env, d)
    pcrs = read_pcrs(banks, env, d)
    if pcrs != pcrs_before:
        die("PCRs changed during the quote")
    run(["tpm2_flushcontext", "-t"], env, d)
    sel = parse_selection(banks)
    att = {
        "is_available": True,
        "pcr_banks": banks,
        "pcr_values": {b: {str(i): pcrs[b][str(i)] for i in idx} for b, idx in sel},
        "aik_pubkey_b64": b64file(os.path.join(d, "ak.pub")),
        "quote_b64": b64file(os.path.join(d, "quote.msg"), wrap_tpm2b=True),
        "signature_b64": b64file(os.path.join(d, "quote.sig")),
    }
    return {"payload_id": payload_id, "tpm_attestation": att}


def main():
    if len(sys.argv) != 2:
        die("usage: tpm_vectors.py OUTPUT_DIR")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        die("missing %s: install swtpm and tpm2-tools (5.4)" % ", ".join(missing))
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="hush-tpm-vectors-")
    state = os.path.join(work, "state")
    os.mkdir(state)
    port = free_port_pair()
    swtpm = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--server", "type=tcp,port=%d" % port,
         "--ctrl", "type=tcp,port=%d" % (port + 1), "--tpmstate", "dir=" + state,
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(port, swtpm)
        env = dict(os.environ, TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=%d" % port)
        # measurements, so the quoted values are not all zero
        for pcr, text in ((0, b"hushcall firmware"), (7, b"hushcall secure boot"),
                          (10, b"hushcall ima"), (16, b"hushcall debug")):
            for bank in ("sha1", "sha256"):
                run(["tpm2_pcrextend", "%d:%s=%s" % (pcr, bank,
                     hashlib.new(bank, text).hexdigest())], env, work)
        for name, alg, scheme, banks, payload_id in VECTORS:
            vec = make_vector(name, alg, scheme, banks, payload_id, env, work)
            path = os.path.join(outdir, name + ".json")
            with open(path, "w") as f:
                json.dump(vec, f, indent=2, sort_keys=True)
                f.write("\n")
            print("wrote", path)
    finally:
        swtpm.terminate()
        try:
            swtpm.wait(timeout=5)
        except subprocess.TimeoutExpired:
            swtpm.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
