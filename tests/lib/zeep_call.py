# SPDX-License-Identifier: Apache-2.0
"""One SOAP 1.2 call with zeep (python3-zeep), the way a SOAP client library makes it, through the
gateway. Names in the address resolve to 127.0.0.1 (like curl --resolve).

usage: zeep_call.py WSDL ADDRESS CAFILE CERT KEY OPERATION ARG
Prints one JSON object: {"result": ...} or {"fault": {"code", "message"}} (zeep raised a Fault),
plus "http" (the status of the last HTTP answer), "x_ccrelay_error" (that header, or null) and
"content_type" (what the answer said).
"""
import json
import socket
import sys

import requests
import zeep
import zeep.exceptions
import zeep.transports

_getaddrinfo = socket.getaddrinfo


def _loopback(host, *args, **kwargs):
    return _getaddrinfo("127.0.0.1" if host.endswith(".example.com") else host, *args, **kwargs)


def main():
    wsdl, address, cafile, cert, key, op, arg = sys.argv[1:8]
    socket.getaddrinfo = _loopback
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies would override what is set here
    session.verify = cafile
    session.cert = (cert, key)
    seen = {}

    def hook(r, *a, **kw):
        seen["http"] = r.status_code
        seen["x_ccrelay_error"] = r.headers.get("X-Ccrelay-Error")
        seen["content_type"] = r.headers.get("Content-Type")

    session.hooks["response"].append(hook)
    client = zeep.Client(wsdl, transport=zeep.transports.Transport(session=session, timeout=10))
    binding = next(iter(client.wsdl.bindings))  # the one SOAP 1.2 binding of the service
    service = client.create_service(binding, address)
    out = {}
    try:
        out["result"] = getattr(service, op)(arg)
    except zeep.exceptions.Fault as f:
        out["fault"] = {"code": f.code, "message": f.message}
    out.update(seen)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
