#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""OpenTrust CMS Mobile "JSON connector" simulator for ccrelay's tests.

POST /connector/mdm.cgi with a JSON document {"action": ...}: test, enroll, renew, revoke, status.
Issues real X.509 certificates signed by --issuer-cert/--issuer-key. The request and answer formats,
and the test-only /test/* endpoints, are documented in tests/sims/README.md.
"""

import datetime
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simlib  # noqa: E402

VERSION = "cms-sim 1"
CONNECTOR_PATH = "/connector/mdm.cgi"
REQUIRED_FIELDS = ("cn", "mail", "mobileserial", "o")
KEY_FORMATS = ("pkcs12", "pem")
KEY_TYPES = ("ec-p256", "rsa-2048")


class ApiError(Exception):
    def __init__(self, status, code, message, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def missing(names):
    return ApiError(400, "missing_fields", "missing required field(s): %s" % ", ".join(names),
                    fields=list(names))


def opt_str(doc, key, prefix="", choices=None):
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ApiError(400, "invalid_field", "%s%s must be a string" % (prefix, key),
                       field=prefix + key)
    if choices is not None and v not in choices:
        raise ApiError(400, "invalid_field", "%s%s must be one of: %s" % (
            prefix, key, ", ".join(choices)), field=prefix + key)
    return v


def norm_serial(v):
    if not isinstance(v, str) or not re.fullmatch(r"[0-9A-Fa-f:]{1,64}", v):
        raise ApiError(400, "invalid_field", "serial must be a hexadecimal string", field="serial")
    return v.replace(":", "").upper().lstrip("0") or "0"


class CmsHandler(simlib.SimHandler):
    prog = "cms-sim"

    def route(self, path, query):
        if path != CONNECTOR_PATH:
            self.send_json_error(404, "not_found", "no such path: %s (the connector is POST %s)"
                                 % (path, CONNECTOR_PATH))
            return
        if self.command != "POST":
            self.send_json_error(405, "method_not_allowed", "%s not allowed on %s; use POST" % (
                self.command, CONNECTOR_PATH), headers=[("Allow", "POST")])
            return
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            self.send_json_error(415, "unsupported_media_type",
                                 "Content-Type must be application/json, got %r" % ctype)
            return
        try:
            raw = self.read_body()
        except simlib.BodyTooLarge as e:
            self.close_connection = True
            self.send_json_error(413, "too_large", "request body exceeds %d bytes" % e.args[0])
            return
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self.send_json_error(400, "invalid_json", "request body is not valid JSON: %s" % e)
            return
        try:
            if not isinstance(doc, dict):
                raise ApiError(400, "invalid_json", "request body must be a JSON object")
            action = doc.get("action")
            if action is None:
                raise missing(["action"])
            handler = {"test": self.act_test, "enroll": self.act_enroll, "renew": self.act_renew,
                       "revoke": self.act_revoke, "status": self.act_status}.get(action)
            if handler is None:
                raise ApiError(400, "unknown_action", "unknown action %r" % (action,),
                               known_actions=["test", "enroll", "renew", "revoke", "status"])
            status, answer = handler(doc)
        except ApiError as e:
            self.send_json_error(e.status, e.code, e.message, **e.extra)
            return
        answer.setdefault("status", "ok")
        answer["action"] = action
        rid = self.headers.get("X-Request-Id")
        if rid is not None:
            answer["request_id"] = rid
        self.send_json(status, answer)

    # -- actions -------------------------------------------------------------------------------

    def act_test(self, doc):
        return 200, {"version": VERSION, "connector": self.peer_cn,
                     "profiles": list(simlib.PROFILES)}

    def issuer(self):
        iss = self.server.state.get("issuer")
        if iss is None:
            raise ApiError(503, "not_configured", "the simulator was started without --issuer-cert")
        return iss

    def key_material(self, doc):
        """(public key, answer fields) from doc's csr, or a fresh key pair the answer carries."""
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        csr = opt_str(doc, "csr")
        key_format = opt_str(doc, "key_format", choices=KEY_FORMATS) or "pkcs12"
        key_type = opt_str(doc, "key_type", choices=KEY_TYPES) or "ec-p256"
        if csr is not None:
            try:
                return simlib.load_csr(csr), None, {}
            except ValueError as e:
                raise ApiError(400, "invalid_csr", str(e), field="csr")
        if key_type == "ec-p256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.public_key(), key, {"key_format": key_format}

    def package(self, cert, key, fmt, friendly):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12
        out = {}
        if key is None:
            return out
        if fmt["key_format"] == "pem":
            out["private_key"] = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode()
        else:
            pw = simlib.new_password()
            out["pkcs12"] = simlib.b64(pkcs12.serialize_key_and_certificates(
                friendly.encode(), key, cert, [self.issuer().cert],
                serialization.BestAvailableEncryption(pw.encode())))
            out["pkcs12_password"] = pw
        return out

    def issue(self, profile, fields, doc, extra):
        iss = self.issuer()
        pub, key, fmt = self.key_material(doc)
        cert = iss.issue(profile, fields, pub)
        serial = simlib.cert_serial_hex(cert)
        rec = {"serial": serial, "profile": profile, "fields": dict(fields), "state": "valid",
               "not_after": cert.not_valid_after.replace(tzinfo=datetime.timezone.utc),
               "peer": self.peer_cn}
        rec.update(extra)
        with self.server.state_lock:
            self.server.state["certs"][serial] = rec
        answer = {"profile": profile, "serial": serial, "subject": cert.subject.rfc4514_string(),
                  "not_before": simlib.iso(cert.not_valid_before),
                  "not_after": simlib.iso(cert.not_valid_after),
                  "certificate": simlib.cert_pem(cert), "ca_chain": [simlib.cert_pem(iss.cert)]}
        answer.update(self.package(cert, key, fmt, fields["cn"]))
        return answer

    def act_enroll(self, doc):
        names = [k for k in ("profile", "datasource") if k not in doc]
        ds = doc.get("datasource")
        if ds is not None and not isinstance(ds, dict):
            raise ApiError(400, "invalid_field", "datasource must be a JSON object",
                           field="datasource")
        if isinstance(ds, dict):
            names += ["datasource." + k for k in REQUIRED_FIELDS if ds.get(k) in (None, "")]
        if names:
            raise missing(names)
        profile = opt_str(doc, "profile")
        if profile not in simlib.PROFILES:
            raise ApiError(400, "unknown_profile", "unknown profile %r" % profile,
                           known_profiles=list(simlib.PROFILES))
        bad = simlib.validate_subject_fields(ds)
        if bad:
            raise ApiError(400, "invalid_field", "datasource.%s %s" % bad[0],
                           field="datasource." + bad[0][0])
        fields = {k: ds.get(k) for k in ("cn", "mail", "mobileserial", "o", "ou")}
        return 200, self.issue(profile, fields, doc, {})

    def lookup(self, doc):
        if "serial" not in doc:
            raise missing(["serial"])
        serial = norm_serial(doc["serial"])
        with self.server.state_lock:
            rec = self.server.state["certs"].get(serial)
        if rec is None:
            raise ApiError(404, "unknown_serial", "no certificate with serial %s" % serial,
                           serial=serial)
        return serial, rec

    def act_renew(self, doc):
        serial, rec = self.lookup(doc)
        if rec["state"] == "revoked":
            raise ApiError(409, "revoked", "certificate %s is revoked" % serial, serial=serial)
        answer = self.issue(rec["profile"], rec["fields"], doc, {"renewed_from": serial})
        answer["renewed_from"] = serial
        return 200, answer

    def act_revoke(self, doc):
        serial, rec = self.lookup(doc)
        reason = opt_str(doc, "reason") or "unspecified"
        with self.server.state_lock:
            if rec["state"] == "revoked":
                raise ApiError(409, "already_revoked", "certificate %s is already revoked" % serial,
                               serial=serial)
            rec["state"] = "revoked"
            rec["revoked_at"] = simlib.iso(datetime.datetime.now(datetime.timezone.utc))
            rec["reason"] = reason
        return 200, {"serial": serial, "revoked_at": rec["revoked_at"], "reason": reason}

    def act_status(self, doc):
        serial, rec = self.lookup(doc)
        state = rec["state"]
        if state == "valid" and rec["not_after"] < datetime.datetime.now(datetime.timezone.utc):
            state = "expired"
        out = {"serial": serial, "state": state, "profile": rec["profile"],
               "not_after": simlib.iso(rec["not_after"])}
        for k in ("revoked_at", "reason", "renewed_from"):
            if k in rec:
                out[k] = rec[k]
        return 200, out


def main(argv):
    p = simlib.arg_parser("cms_sim.py", "OpenTrust CMS Mobile JSON connector simulator")
    p.add_argument("--issuer-cert", help="issuing CA certificate (PEM) for enrolled certificates")
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
        srv.state["certs"] = {}

    return simlib.serve("cms-sim", CmsHandler, opts, setup)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
