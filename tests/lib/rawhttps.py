"""Send raw bytes to an HTTPS server and print the status code of the first response ("000" if none).

usage: rawhttps.py HOST PORT CAFILE SERVER_NAME  < request-bytes
Reads until the server closes or 5 s pass. Used to send requests curl refuses to build
(request-smuggling vectors, bare CR line endings, obs-fold).
"""
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
    line = got.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    print(parts[1] if len(parts) > 1 and line.startswith("HTTP/") else "000")
    sys.stderr.write(got.decode("latin-1", "replace")[:2000])


if __name__ == "__main__":
    main()
