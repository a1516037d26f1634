#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Generate ccrelay's throwaway test PKI. Called by mkpki.sh; see tests/sims/README.md for the file list.

Everything is built in a fresh temporary directory next to OUTDIR and then renamed into place file by
file, so a rerun overwrites cleanly and a failed run never leaves a half-written file under a final
name. Certificates come from python3-cryptography (it can back-date, which `openssl req` cannot);
the PKCS#12 files come from the openssl CLI so they are exactly what OpenSSL 3 itself produces
(AES-256-CBC/PBKDF2 by default, RC2-40/3DES with -legacy).
"""

import datetime
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERBOSE = False
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
# Back-dated a little so a peer whose clock lags by a few minutes still accepts the certificates.
NOT_BEFORE = NOW - datetime.timedelta(hours=1)
NOT_AFTER = NOW + datetime.timedelta(days=2)


def log(msg):
    if VERBOSE:
        print("mkpki: " + msg, file=sys.stderr)


def new_key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(cn, o="ccrelay tests", ou=None):
    attrs = []
    if o:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def san(entries):
    out = []
    for e in entries:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(e)))
        except ValueError:
            out.append(x509.DNSName(e))
    return x509.SubjectAlternativeName(out)


class Pki:
    def __init__(self, tmpdir):
        self.dir = tmpdir
        self.written = []
        self.certs = {}  # base name -> (cert, key)

    def _write(self, fname, data, mode=0o644):
        path = os.path.join(self.dir, fname)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.written.append(fname)
        return path

    def _save(self, base, cert, key):
        self._write(base + ".pem", cert.public_bytes(serialization.Encoding.PEM))
        self._write(base + ".key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600)
        self.certs[base] = (cert, key)
        log("%s.pem: %s" % (base, cert.subject.rfc4514_string()))

    def ca(self, base, cn, kind="ec", o="ccrelay tests", ou=None):
        key = new_key(kind)
        subj = name(cn, o, ou)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(subj).issuer_name(subj)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        self._save(base, cert, key)

    def leaf(self, base, cn, issuer, *, server=False, client=False, sans=(), kind="ec",
             o="ccrelay tests", ou=None, not_before=NOT_BEFORE, not_after=NOT_AFTER):
        ca_cert, ca_key = self.certs[issuer]
        key = new_key(kind)
        ekus = []
        if server:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        b = (x509.CertificateBuilder()
             .subject_name(name(cn, o, ou)).issuer_name(ca_cert.subject)
             .public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(not_before).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=True, content_commitment=False,
                 key_encipherment=(kind == "rsa"), data_encipherment=False, key_agreement=False,
                 key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
                 critical=True)
             .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 ca_key.public_key()), critical=False))
        if sans:
            b = b.add_extension(san(sans), critical=False)
        self._save(base, b.sign(ca_key, hashes.SHA256()), key)

    def pkcs12(self, base, issuer, friendly, legacy=False, out=None, password=None):
        """PKCS#12 of base.pem/.key plus the issuing CA, via the openssl CLI. Returns the password."""
        out = out or base + ".p12"
        if password is None:
            # URL-safe so the password survives YAML, shells and env vars untouched in any test.
            password = secrets.token_urlsafe(18)
            self._write(base + ".pass", (password + "\n").encode(), 0o600)
        cmd = ["openssl", "pkcs12", "-export",
               "-in", os.path.join(self.dir, base + ".pem"),
               "-inkey", os.path.join(self.dir, base + ".key"),
               "-certfile", os.path.join(self.dir, issuer + ".pem"),
               "-name", friendly,
               "-passout", "file:" + os.path.join(self.dir, base + ".pass"),
               "-out", os.path.join(self.dir, out)]
        if legacy:
            cmd.insert(3, "-legacy")
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(cmd[:4]), r.stderr.decode(errors="replace")))
        os.chmod(os.path.join(self.dir, out), 0o600)
        self.written.append(out)
        log("%s: %s PKCS#12 for %s" % (out, "legacy" if legacy else "AES-256", friendly))
        return password


def build(tmp):
    p = Pki(tmp)
    # Tunnel: the gateway's tunnel listener and the agents dialling it.
    p.ca("tunnel-ca", "ccrelay Test Tunnel CA")
    p.leaf("gateway-tunnel", "localhost", "tunnel-ca", server=True,
           sans=("localhost", "127.0.0.1", "::1"))
    p.leaf("agent", "acme-agent-1", "tunnel-ca", client=True)
    p.leaf("agent-nogroup", "stranger-agent", "tunnel-ca", client=True)
    p.ca("other-ca", "ccrelay Test Unrelated CA")
    p.leaf("agent-otherca", "acme-agent-1", "other-ca", client=True)

    # The gateway's public HTTPS side.
    p.ca("public-ca", "ccrelay Test Public CA")
    p.leaf("public", "localhost", "public-ca", server=True,
           sans=("localhost", "127.0.0.1", "::1", "cms.example.com", "pki.example.com"))

    # On-prem upstream servers and the broken variants the agent must refuse.
    p.ca("upstream-ca", "ccrelay Test Upstream CA")
    p.leaf("cms-server", "cms.internal", "upstream-ca", server=True,
           sans=("localhost", "cms.internal", "127.0.0.1"))
    p.leaf("pki-server", "pki.internal", "upstream-ca", server=True,
           sans=("localhost", "pki.internal", "127.0.0.1"))
    p.leaf("nginx-server", "localhost", "upstream-ca", server=True, sans=("localhost", "127.0.0.1"))
    p.leaf("upstream-expired", "localhost", "upstream-ca", server=True,
           sans=("localhost", "127.0.0.1"),
           not_before=NOW - datetime.timedelta(days=10), not_after=NOW - datetime.timedelta(days=1))
    p.leaf("upstream-unknownca", "localhost", "other-ca", server=True,
           sans=("localhost", "127.0.0.1"))
    p.leaf("upstream-wronghost", "wrong.example", "upstream-ca", server=True,
           sans=("wrong.example",))

    # The on-prem connector identities of the reference document (RSA, as such PKIs issue them).
    o, ou = "ACME Test PKI", "Testing"
    p.ca("client-ca", "OpenTrust Test CA", o=o)
    for base, cn in (("cms-json-connector", "CMS JSON connector"),
                     ("cms-admin", "CMS Admin"),
                     ("pki-soap-connector", "PKI SOAP connector")):
        p.leaf(base, cn, "client-ca", client=True, kind="rsa", o=o, ou=ou)
        pw = p.pkcs12(base, "client-ca", cn)
        if base == "cms-json-connector":
            p.pkcs12(base, "client-ca", cn, legacy=True, out="cms-json-connector-legacy.p12",
                     password=pw)
    p._write("corrupt.p12", os.urandom(1536), 0o600)

    # The CA the CMS simulator signs enrolled device certificates with.
    p.ca("issuing-ca", "ACME Test Issuing CA", o=o)
    return p.written


def main(argv):
    global VERBOSE
    args = [a for a in argv[1:] if a != "-v"]
    VERBOSE = len(args) != len(argv) - 1
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: mkpki.sh [-v] OUTDIR", file=sys.stderr)
        return 2
    outdir = os.path.abspath(args[0])
    try:
        os.makedirs(outdir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".mkpki.", dir=outdir)
    except OSError as e:
        print("mkpki: error: %s" % e, file=sys.stderr)
        return 1
    try:
        written = build(tmp)
        for f in written:
            os.replace(os.path.join(tmp, f), os.path.join(outdir, f))
    except Exception as e:  # any failure is fatal and must say why
        print("mkpki: error: %s" % e, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log("%d files written to %s" % (len(written), outdir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
