#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A SOAP 1.2 service made with spyne, for ccrelay's tests: the upstream a real SOAP 1.2 client
(zeep) calls through the relay.

Operations (namespace urn:ccrelay:sim:hello, SOAP 1.2 in and out, WSDL at GET /hello?wsdl):
  say_hello(name)   -> "Hello, <name>"
  say_goodbye(name) -> "Goodbye, <name>"
Each operation's SOAP action is its name, so a SOAP 1.2 client sends
`Content-Type: application/soap+xml; charset=utf-8; action="say_hello"`.

It runs on simlib's TLS server (client certificate required like the other sims); spyne's WSGI
application answers every path but /test/*, which keeps simlib's test endpoints.
"""
import io
import sys
import urllib.parse

from spyne import Application, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap12
from spyne.server.wsgi import WsgiApplication

import simlib

TNS = "urn:ccrelay:sim:hello"


class HelloService(ServiceBase):
    @rpc(Unicode, _returns=Unicode)
    def say_hello(ctx, name):
        return "Hello, %s" % name

    @rpc(Unicode, _returns=Unicode)
    def say_goodbye(ctx, name):
        return "Goodbye, %s" % name


APP = WsgiApplication(Application([HelloService], tns=TNS, name="Hello", in_protocol=Soap12(validator="lxml"),
                                  out_protocol=Soap12()))

# Framing is simlib's to set; these never pass through from the WSGI answer.
_FRAMING = ("content-length", "content-type", "connection", "transfer-encoding")


class Handler(simlib.SimHandler):
    prog = "soap12_sim"

    def route(self, path, query):
        body = self.read_body() if self.command == "POST" else b""
        url = urllib.parse.urlsplit(self.path)
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": url.query,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": str(self.server.server_port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in self.headers.items():
            key = "HTTP_" + k.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = v
        answer = {}

        def start_response(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers

        out = b"".join(APP(environ, start_response))
        hdrs = answer["headers"]
        ctype = next((v for k, v in hdrs if k.lower() == "content-type"), None)
        self.send_bytes(int(answer["status"].split()[0]), ctype, out,
                        [(k, v) for k, v in hdrs if k.lower() not in _FRAMING])


def main():
    opts = simlib.arg_parser("soap12_sim.py", "spyne SOAP 1.2 service").parse_args()
    return simlib.serve("soap12_sim", Handler, opts)


if __name__ == "__main__":
    sys.exit(main())
