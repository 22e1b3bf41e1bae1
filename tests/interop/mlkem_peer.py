"""ML-KEM-768 through pyca `cryptography` (OpenSSL 3.5's implementation), the independent side
of test_mlkem's live cross-check. One operation per run, hex in, hex out (one line):

  mlkem_peer.py public SEED          -> ek of the key pair the 64-byte seed d || z names
  mlkem_peer.py encaps EK            -> ct ss
  mlkem_peer.py decaps SEED CT       -> ss (the implicit-rejection secret for a bad ct)
"""
import sys

from cryptography.hazmat.primitives.asymmetric import mlkem


def main(argv):
    op, args = argv[1], [bytes.fromhex(a) for a in argv[2:]]
    if op == "public":
        print(mlkem.MLKEM768PrivateKey.from_seed_bytes(args[0]).public_key().public_bytes_raw().hex())
    elif op == "encaps":
        ss, ct = mlkem.MLKEM768PublicKey.from_public_bytes(args[0]).encapsulate()
        print(ct.hex(), ss.hex())
    elif op == "decaps":
        print(mlkem.MLKEM768PrivateKey.from_seed_bytes(args[0]).decapsulate(args[1]).hex())
    else:
        raise SystemExit("unknown operation " + op)


if __name__ == "__main__":
    main(sys.argv)
