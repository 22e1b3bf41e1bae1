#!/usr/bin/env python3
"""An independent NOMYO v1 peer for the C interop tests.

Written only with Python's `cryptography` package (and, for one command, the
public `nomyo` client itself), never with hushcall, so the C core is checked
against someone else's reading of the protocol. Files in, files out; the C
test drives it and compares.

  keygen DIR [--password P]          write DIR/private_key.pem and public_key.pem
  seal PUBLIC_PEM IN OUT [--processed-at UNIX_SECONDS]
  open PRIVATE_PEM IN OUT [--password P] [--check-layout]
  nomyo-open KEY_DIR IN OUT [--password P]   decrypt with nomyo's own client
"""
import argparse
import asyncio
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from v1_envelope import has_nomyo_layout, open_package, seal


def keygen(args):
    key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
    os.makedirs(args.dir, exist_ok=True)
    encryption = (serialization.BestAvailableEncryption(args.password.encode())
                  if args.password else serialization.NoEncryption())
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8, encryption)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    path = os.path.join(args.dir, "private_key.pem")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    with open(os.path.join(args.dir, "public_key.pem"), "wb") as f:
        f.write(public)


def seal_file(args):
    with open(args.public_pem, "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    with open(args.input, "rb") as f:
        plaintext = f.read()
    with open(args.output, "wb") as f:
        f.write(seal(public, plaintext, args.processed_at))


def open_file(args):
    with open(args.private_pem, "rb") as f:
        private = serialization.load_pem_private_key(
            f.read(), password=args.password.encode() if args.password else None)
    with open(args.input, "rb") as f:
        body = f.read()
    if args.check_layout and not has_nomyo_layout(body):
        sys.exit("layout differs from nomyo's json.dumps")
    with open(args.output, "wb") as f:
        f.write(open_package(private, body))


def nomyo_open(args):
    from nomyo.SecureCompletionClient import SecureCompletionClient

    # The URL is never contacted: only decrypt_response() is used.
    client = SecureCompletionClient(router_url="https://127.0.0.1:9")
    client.load_keys(os.path.join(args.key_dir, "private_key.pem"),
                     os.path.join(args.key_dir, "public_key.pem"), password=args.password)
    with open(args.input, "rb") as f:
        package = f.read()
    response = asyncio.run(client.decrypt_response(package, "interop-payload-id"))
    with open(args.output, "w") as f:
        json.dump(response, f)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen")
    p.add_argument("dir")
    p.add_argument("--password")
    p.add_argument("--bits", type=int, default=4096)
    p.set_defaults(run=keygen)
    p = sub.add_parser("seal")
    p.add_argument("public_pem")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--processed-at", type=int, help="Unix seconds, as NOMYO writes it")
    p.set_defaults(run=seal_file)
    p = sub.add_parser("open")
    p.add_argument("private_pem")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--password")
    p.add_argument("--check-layout", action="store_true")
    p.set_defaults(run=open_file)
    p = sub.add_parser("nomyo-open")
    p.add_argument("key_dir")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--password")
    p.set_defaults(run=nomyo_open)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
