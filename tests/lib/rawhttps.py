# SPDX-License-Identifier: Apache-2.0
"""Send raw bytes to an HTTPS server and print the status codes of the responses, space-separated
("000" if none).

usage: rawhttps.py HOST PORT CAFILE SERVER_NAME  < request-bytes
Reads until the server closes or 5 s pass. Used to send requests curl refuses to build
(request-smuggling vectors, bare CR line endings, obs-fold).
"""
import re
import socket
import ssl
import sys


def main():
    host, port, cafile, sni = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    data = sys.stdin.buffer.read()
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection((host, port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    s.sendall(data)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ssl.SSLError, ConnectionResetError):
        pass
    s.close()
    # Status lines at the start of the stream or right after a previous message's end; bodies here
    # are small JSON, so a status-line pattern cannot appear inside them.
    codes = re.findall(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", got)
    print(" ".join(c.decode() for c in codes) if codes else "000")
    sys.stderr.write(got.decode("latin-1", "replace")[:2000])


if __name__ == "__main__":
    main()
