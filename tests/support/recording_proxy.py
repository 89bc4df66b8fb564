#!/usr/bin/env python3
"""An HTTP proxy for tests that records every request it proxies.

Listens on 127.0.0.1 (a free port, printed on stdout as "port N" once
listening) and forwards only to 127.0.0.1, whatever host a request names, so
no test traffic leaves the machine. Plain HTTP requests must be in absolute
form (http://host:port/path) and are forwarded in origin form with
"Connection: close"; CONNECT host:port opens a tunnel to 127.0.0.1:port.

Each request appends one line to the log file, flushed before the request is
answered:  METHOD TARGET auth=none|ok|bad
With --auth FILE, requests without a Proxy-Authorization equal to FILE's
content get 407 with Proxy-Authenticate: Basic. Test code only; standard
library only.
"""
import argparse
import socket
import socketserver
import sys
import threading

LOCK = threading.Lock()


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 65536:
            return None, b""
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def pump(src, dst):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        c = self.request
        head, rest = read_head(c)
        if head is None:
            return
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return
        method, target, _ = parts
        headers = []
        auth = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                auth = value.strip()
            else:
                headers.append((name.strip(), value.strip()))
        verdict = "none" if auth is None else ("ok" if auth == self.server.expected_auth else "bad")
        with LOCK:
            with open(self.server.log, "a") as f:
                f.write("%s %s auth=%s\n" % (method, target, verdict))
        if self.server.expected_auth is not None and verdict != "ok":
            c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                      b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")
            return
        if method == "CONNECT":
            port = int(target.rsplit(":", 1)[1])
            up = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                up.sendall(rest)
            t = threading.Thread(target=pump, args=(up, c), daemon=True)
            t.start()
            pump(c, up)
            t.join()
            up.close()
            return
        if not target.startswith("http://"):
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        authority, _, path = target[len("http://"):].partition("/")
        port = int(authority.rsplit(":", 1)[1]) if ":" in authority else 80
        up = socket.create_connection(("127.0.0.1", port))
        out = "%s /%s HTTP/1.1\r\n" % (method, path)
        for name, value in headers:
            if name.lower() not in ("connection", "proxy-connection"):
                out += "%s: %s\r\n" % (name, value)
        out += "Connection: close\r\n\r\n"
        up.sendall(out.encode("latin-1") + rest)
        pump(up, c)
        up.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--auth")
    a = ap.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.log = a.log
    srv.expected_auth = None
    if a.auth:
        with open(a.auth) as f:
            srv.expected_auth = f.read().strip()
    open(a.log, "a").close()
    sys.stdout.write("port %d\n" % srv.server_address[1])
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
