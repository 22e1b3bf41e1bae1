#!/usr/bin/env python3
"""Write a throwaway PKI for the TLS tests of hushcall's transport.

  make_test_ca.py OUTDIR

OUTDIR gets ca.pem + ca.key (self-signed CA), server.pem + server.key (for
127.0.0.1 and localhost), client.pem + client.key (for mutual TLS),
other_ca.pem (an unrelated CA, for "wrong CA" tests) and server_pin.txt
("sha256//" + base64 SHA-256 of the server's DER SubjectPublicKeyInfo, no
newline: libcurl's CURLOPT_PINNEDPUBLICKEY syntax). Keys are unencrypted
PKCS#8, mode 0600. Everything is valid from yesterday for 30 days.
"""
import base64
import datetime
import hashlib
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
NOT_BEFORE = NOW - datetime.timedelta(days=1)
NOT_AFTER = NOT_BEFORE + datetime.timedelta(days=30)


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hushcall tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(subject, key, issuer, issuer_key, is_ca, extensions):
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOT_BEFORE)
               .not_valid_after(NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               # OpenSSL 3's strict mode (Python 3.13's default) wants an AKI on every leaf.
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.KeyUsage))
    return builder.sign(issuer_key, hashes.SHA256())


def key_usage(**allowed):
    usages = ("digital_signature", "content_commitment", "key_encipherment",
              "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
              "encipher_only", "decipher_only")
    return x509.KeyUsage(**{usage: allowed.get(usage, False) for usage in usages})


def self_signed_ca(common_name):
    key = new_key()
    cert = certificate(name(common_name), key, name(common_name), key, True,
                       [key_usage(key_cert_sign=True, crl_sign=True)])
    return cert, key


def leaf(common_name, ca_cert, ca_key, usage, alt_names=None):
    key = new_key()
    extensions = [key_usage(digital_signature=True, key_encipherment=True),
                  x509.ExtendedKeyUsage([usage])]
    if alt_names:
        extensions.append(x509.SubjectAlternativeName(alt_names))
    return certificate(name(common_name), key, ca_cert.subject, ca_key, False, extensions), key


def write(outdir, filename, data, private=False):
    path = os.path.join(outdir, filename)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    # O_CREAT's mode does not apply to a file left over from an earlier run.
    if private:
        os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_test_ca.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)

    ca_cert, ca_key = self_signed_ca("hushcall test CA")
    server_cert, server_key = leaf(
        "localhost", ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client_cert, client_key = leaf("hushcall test client", ca_cert, ca_key,
                                   ExtendedKeyUsageOID.CLIENT_AUTH)
    other_cert, _ = self_signed_ca("hushcall unrelated CA")

    spki = server_cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()

    write(outdir, "ca.pem", cert_pem(ca_cert))
    write(outdir, "ca.key", key_pem(ca_key), private=True)
    write(outdir, "server.pem", cert_pem(server_cert))
    write(outdir, "server.key", key_pem(server_key), private=True)
    write(outdir, "client.pem", cert_pem(client_cert))
    write(outdir, "client.key", key_pem(client_key), private=True)
    write(outdir, "other_ca.pem", cert_pem(other_cert))
    write(outdir, "server_pin.txt", pin.encode())


if __name__ == "__main__":
    main()
