"""The web app of examples/webapp: rows of text kept in Redis, over HTTP/JSON.

Python's standard library http.server and Debian's python3-redis, nothing
else. Not a framework: one handler, four routes (README.md lists them).

Configuration comes from the environment the Sandboxfile sets: GREETING (in
every answer, so a changed environment shows), REDIS_HOST (the database
sandbox's name, resolved by the sandbox's DNS), PORT.
"""

import http.server
import json
import os
import sys

import redis

GREETING = os.environ.get("GREETING", "hello")
PORT = int(os.environ.get("PORT", "8000"))
# One client, one connection pool. A replaced database sandbox leaves pooled
# connections dead: each command is tried once more on a fresh connection.
DB = redis.Redis(host=os.environ.get("REDIS_HOST", "db"), port=6379,
                 socket_connect_timeout=5, socket_timeout=5, decode_responses=True)
MAX_ROW = 64 * 1024


def db_call(fn):
    try:
        return fn()
    except redis.ConnectionError:
        return fn()


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "msb-webapp/1"

    def answer(self, status, body):
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/":
                count = db_call(lambda: DB.hlen("rows"))
                self.answer(200, {"greeting": GREETING, "rows": count})
            elif self.path == "/health":
                self.answer(200, {"db": "PONG" if db_call(DB.ping) else "?"})
            elif self.path == "/rows":
                rows = db_call(lambda: DB.hgetall("rows"))
                listed = [{"id": int(k), "text": v} for k, v in rows.items()]
                listed.sort(key=lambda r: r["id"])
                self.answer(200, {"greeting": GREETING, "rows": listed})
            elif self.path.startswith("/rows/") and self.path[6:].isdigit():
                text = db_call(lambda: DB.hget("rows", self.path[6:]))
                if text is None:
                    self.answer(404, {"error": "no row " + self.path[6:]})
                else:
                    self.answer(200, {"greeting": GREETING, "id": int(self.path[6:]), "text": text})
            else:
                self.answer(404, {"error": "no route " + self.path})
        except redis.RedisError as e:
            self.answer(503, {"error": "database: " + str(e)})

    def do_POST(self):
        if self.path != "/rows":
            self.answer(404, {"error": "no route " + self.path})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_ROW:
            self.answer(413, {"error": "a row holds at most %d bytes" % MAX_ROW})
            return
        text = self.rfile.read(length).decode("utf-8", "replace")
        try:
            row_id = db_call(lambda: DB.incr("rows:last"))
            db_call(lambda: DB.hset("rows", str(row_id), text))
            self.answer(201, {"greeting": GREETING, "id": row_id, "text": text})
        except redis.RedisError as e:
            self.answer(503, {"error": "database: " + str(e)})


def main():
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print("webapp: %r on port %d, database %s" % (GREETING, PORT, DB.connection_pool.connection_kwargs["host"]),
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
