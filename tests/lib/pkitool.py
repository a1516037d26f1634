# SPDX-License-Identifier: Apache-2.0
"""Small PKI operations the end-to-end tests need beyond tests/pki/mkpki.sh (python3-cryptography).

  pkitool.py issue CA_CERT CA_KEY OUT_BASE --cn CN [--server|--client] [--dns NAME]... [--ip ADDR]...
                   [--start-days N] [--days N] [--p12-pass PASSWORD]
      writes OUT_BASE.pem, OUT_BASE.key and, with --p12-pass, OUT_BASE.p12 (AES-256). --start-days -3
      --days 1 gives a certificate that expired two days ago.
  pkitool.py crl CA_CERT CA_KEY OUT [--revoke CERT]... [--stale]
      writes a PEM CRL signed by the CA; --stale makes its nextUpdate lie in the past.
"""
import argparse
import datetime
import ipaddress
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def load(ca_cert, ca_key):
    with open(ca_cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(ca_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


def issue(a):
    ca, ca_key = load(a.ca_cert, a.ca_key)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now + datetime.timedelta(days=a.start_days)
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, a.cn),
                                  x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ccrelay tests")]))
         .issuer_name(ca.subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(start)
         .not_valid_after(start + datetime.timedelta(days=a.days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                      data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True))
    eku = [ExtendedKeyUsageOID.SERVER_AUTH] if a.server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    sans = [x509.DNSName(d) for d in a.dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in a.ip]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    with open(a.out + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(a.out + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    if a.p12_pass is not None:
        blob = pkcs12.serialize_key_and_certificates(
            a.cn.encode(), key, cert, [ca],
            serialization.BestAvailableEncryption(a.p12_pass.encode()))
        with open(a.out + ".p12", "wb") as f:
            f.write(blob)


def crl(a):
    ca, ca_key = load(a.ca_cert, a.ca_key)
    now = datetime.datetime.now(datetime.timezone.utc)
    if a.stale:
        this_update, next_update = now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)
    else:
        this_update, next_update = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=7)
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(ca.subject)
         .last_update(this_update)
         .next_update(next_update)
         .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False))
    for path in a.revoke:
        with open(path, "rb") as f:
            c = x509.load_pem_x509_certificate(f.read())
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(c.serial_number)
                                      .revocation_date(this_update)
                                      .build())
    with open(a.out, "wb") as f:
        f.write(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("issue")
    i.add_argument("ca_cert")
    i.add_argument("ca_key")
    i.add_argument("out")
    i.add_argument("--cn", required=True)
    i.add_argument("--server", action="store_true")
    i.add_argument("--client", action="store_true")
    i.add_argument("--dns", action="append", default=[])
    i.add_argument("--ip", action="append", default=[])
    i.add_argument("--start-days", type=float, default=-1)
    i.add_argument("--days", type=float, default=2)
    i.add_argument("--p12-pass")
    c = sub.add_parser("crl")
    c.add_argument("ca_cert")
    c.add_argument("ca_key")
    c.add_argument("out")
    c.add_argument("--revoke", action="append", default=[])
    c.add_argument("--stale", action="store_true")
    a = p.parse_args()
    issue(a) if a.cmd == "issue" else crl(a)


if __name__ == "__main__":
    sys.exit(main())
