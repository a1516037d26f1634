#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""OpenTrust PKI SOAP "policyService" simulator for ccrelay's tests.

POST /policyService with a SOAP 1.1 (text/xml + SOAPAction) or SOAP 1.2 (application/soap+xml)
envelope. Operations: GetVersion, GetProfiles (alias GetPolicies), EnrollCertificate. Failures are
SOAP Faults. Envelopes are documented in tests/sims/README.md.
"""

import os
import re
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simlib  # noqa: E402

SERVICE_PATH = "/policyService"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
PKI_NS = "urn:ccrelay:sim:opentrust-pki:policyService"
CT11 = "text/xml; charset=utf-8"
CT12 = "application/soap+xml; charset=utf-8"

ET.register_namespace("soap", SOAP11)
ET.register_namespace("env", SOAP12)
ET.register_namespace("pki", PKI_NS)

PROFILE_INFO = {
    "Mobile Authentication": {"type": "Decentralized", "key_size": "1024",
                              "fields": [("cn", True), ("ou", False), ("o", True),
                                         ("mail", True), ("mobileserial", True)]},
    "S/MIME": {"type": "Centralized", "key_size": "2048",
               "fields": [("cn", True), ("o", True), ("mail", True), ("mobileserial", True)]},
}


class Fault(Exception):
    """code: 'Client' (the request is wrong), 'Server' (we failed) or 'VersionMismatch'."""

    def __init__(self, code, text, status=500):
        super().__init__(text)
        self.code, self.text, self.status = code, text, status


def q(tag):
    return "{%s}%s" % (PKI_NS, tag)


def sub(parent, tag, text=None, **attrs):
    e = ET.SubElement(parent, q(tag), attrs)
    if text is not None:
        e.text = text
    return e


def local(tag):
    return tag.rsplit("}", 1)[-1]


def ns_of(tag):
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


class PkiHandler(simlib.SimHandler):
    prog = "pki-sim"

    # The envelope version of the current request: chosen from Content-Type before the body is read
    # so that even a fault about a malformed body answers in the caller's dialect.
    soap_ns = SOAP11

    def envelope(self, status, body_child):
        ns = self.soap_ns
        env = ET.Element("{%s}Envelope" % ns)
        ET.SubElement(env, "{%s}Header" % ns)
        body = ET.SubElement(env, "{%s}Body" % ns)
        body.append(body_child)
        data = ET.tostring(env, encoding="utf-8", xml_declaration=True)
        self.send_bytes(status, CT11 if ns == SOAP11 else CT12, data)

    def send_fault(self, code, text, status=500):
        ns = self.soap_ns
        if ns == SOAP12 and status == 500 and code == "Client":
            status = 400  # the SOAP 1.2 HTTP binding answers env:Sender faults with 400
        f = ET.Element("{%s}Fault" % ns)
        if ns == SOAP11:
            ET.SubElement(f, "faultcode").text = "soap:" + code
            ET.SubElement(f, "faultstring").text = text
        else:
            c = ET.SubElement(f, "{%s}Code" % ns)
            v12 = {"Client": "Sender", "Server": "Receiver"}.get(code, code)
            ET.SubElement(c, "{%s}Value" % ns).text = "env:" + v12
            r = ET.SubElement(f, "{%s}Reason" % ns)
            t = ET.SubElement(r, "{%s}Text" % ns)
            t.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            t.text = text
        self.envelope(status, f)

    def send_error_doc(self, status, code, message, **extra):
        self.soap_ns = SOAP12 if self._ctype() == "application/soap+xml" else SOAP11
        self.send_fault("Client" if status < 500 else "Server", message, status)

    def _ctype(self):
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def route(self, path, query):
        self.soap_ns = SOAP11
        if path != SERVICE_PATH:
            self.send_fault("Client", "no endpoint at %s (the service is POST %s)"
                            % (path, SERVICE_PATH), 404)
            return
        if self.command != "POST":
            self.send_fault("Client", "%s not allowed on %s; use POST" % (self.command, path), 405)
            return
        ctype = self._ctype()
        if ctype == "application/soap+xml":
            self.soap_ns = SOAP12
        elif ctype != "text/xml":
            self.send_fault("Client", "Content-Type must be text/xml (SOAP 1.1) or "
                            "application/soap+xml (SOAP 1.2), got %r"
                            % self.headers.get("Content-Type", ""), 415)
            return
        try:
            try:
                raw = self.read_body()
            except simlib.BodyTooLarge as e:
                self.close_connection = True
                raise Fault("Client", "request body exceeds %d bytes" % e.args[0], 413)
            op, el = self.parse(raw)
            answer = self.dispatch_op(op, el)
        except Fault as f:
            self.send_fault(f.code, f.text, f.status)
            return
        except Exception as e:  # a bug in the simulator still answers as a SOAP service would
            self.server.logs.diag("internal error: %r" % e)
            self.send_fault("Server", "internal error: %s" % e)
            return
        self.envelope(200, answer)

    def action(self):
        """The SOAP action named by the transport: SOAPAction (1.1) or the action= parameter (1.2)."""
        if self.soap_ns == SOAP11:
            v = self.headers.get("SOAPAction")
            if v is None:
                raise Fault("Client", "missing SOAPAction header (required by SOAP 1.1)")
            return v.strip().strip('"')
        m = re.search(r';\s*action\s*=\s*"?([^";]*)"?', self.headers.get("Content-Type", ""))
        return m.group(1) if m else ""

    def parse(self, raw):
        # ElementTree expands internal entities, so anything with a DTD is refused before parsing
        # (no defusedxml here); SOAP forbids DTDs anyway.
        if re.search(rb"<!(DOCTYPE|ENTITY)", raw, re.IGNORECASE):
            raise Fault("Client", "DTDs and entity declarations are not allowed in SOAP messages")
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as e:
            raise Fault("Client", "malformed XML: %s" % e)
        if local(root.tag) != "Envelope" or ns_of(root.tag) not in (SOAP11, SOAP12):
            raise Fault("VersionMismatch" if local(root.tag) == "Envelope" else "Client",
                        "root element must be a SOAP Envelope, got %s" % root.tag)
        if ns_of(root.tag) != self.soap_ns:
            raise Fault("VersionMismatch", "envelope namespace %s does not match Content-Type %s"
                        % (ns_of(root.tag), self._ctype()))
        body = root.find("{%s}Body" % self.soap_ns)
        if body is None:
            raise Fault("Client", "Envelope has no Body")
        children = list(body)
        if len(children) != 1:
            raise Fault("Client", "Body must contain exactly one operation element, found %d"
                        % len(children))
        el = children[0]
        op = local(el.tag)
        if ns_of(el.tag) != PKI_NS:
            raise Fault("Client", "unknown operation %s (operations live in namespace %s)"
                        % (el.tag, PKI_NS))
        act = self.action()
        if act and re.split(r"[/#:]", act)[-1] != op:
            raise Fault("Client", "SOAP action %r does not match operation %s" % (act, op))
        return op, el

    def dispatch_op(self, op, el):
        if op == "GetVersion":
            r = ET.Element(q("GetVersionResponse"))
            sub(r, "Version", simlib.PKI_VERSION)
            return r
        if op in ("GetProfiles", "GetPolicies"):
            r = ET.Element(q(op + "Response"))
            for name, info in PROFILE_INFO.items():
                p = sub(r, "Profile")
                sub(p, "Name", name)
                sub(p, "PKIVersion", simlib.PKI_VERSION)
                sub(p, "Type", info["type"])
                sub(p, "KeySize", info["key_size"])
                fs = sub(p, "Fields")
                for fname, mandatory in info["fields"]:
                    sub(fs, "Field", fname, mandatory="true" if mandatory else "false")
            return r
        if op == "EnrollCertificate":
            return self.enroll(el)
        raise Fault("Client", "unknown operation %s" % op)

    def enroll(self, el):
        def text(parent, tag):
            e = parent.find(q(tag))
            return e.text.strip() if e is not None and e.text and e.text.strip() else None

        issuer = self.server.state.get("issuer")
        if issuer is None:
            raise Fault("Server", "enrollment is not configured (no --issuer-cert)")
        profile = text(el, "Profile")
        csr = text(el, "CSR")
        subj = el.find(q("Subject"))
        fields = {k: (text(subj, k) if subj is not None else None)
                  for k in ("cn", "mail", "mobileserial", "o", "ou")}
        missing = [n for n, v in (("Profile", profile), ("CSR", csr)) if v is None]
        missing += ["Subject/" + k for k in ("cn", "mail", "mobileserial", "o") if not fields[k]]
        if missing:
            raise Fault("Client", "missing element(s): %s" % ", ".join(missing))
        if profile not in PROFILE_INFO:
            raise Fault("Client", "unknown profile %r (known: %s)" % (
                profile, ", ".join(PROFILE_INFO)))
        bad = simlib.validate_subject_fields(fields)
        if bad:
            raise Fault("Client", "Subject/%s %s" % bad[0])
        try:
            pub = simlib.load_csr(csr)
        except ValueError as e:
            raise Fault("Client", str(e))
        cert = issuer.issue(profile, fields, pub)
        r = ET.Element(q("EnrollCertificateResponse"))
        sub(r, "SerialNumber", simlib.cert_serial_hex(cert))
        sub(r, "NotAfter", simlib.iso(cert.not_valid_after))
        sub(r, "Certificate", simlib.cert_pem(cert))
        sub(r, "IssuerCertificate", simlib.cert_pem(issuer.cert))
        return r


def main(argv):
    p = simlib.arg_parser("pki_sim.py", "OpenTrust PKI SOAP policyService simulator")
    p.add_argument("--issuer-cert", help="issuing CA certificate (PEM) for EnrollCertificate")
    p.add_argument("--issuer-key", help="issuing CA private key (PEM)")
    p.add_argument("--validity-days", type=int, default=1, help="lifetime of issued certificates")
    opts = p.parse_args(argv[1:])
    if bool(opts.issuer_cert) != bool(opts.issuer_key):
        p.error("--issuer-cert and --issuer-key go together")
    issuer = None
    if opts.issuer_cert:
        issuer = simlib.Issuer(opts.issuer_cert, opts.issuer_key, opts.validity_days)

    def setup(srv):
        srv.state["issuer"] = issuer

    return simlib.serve("pki-sim", PkiHandler, opts, setup)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
