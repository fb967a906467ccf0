"""A tiny HTTP server for the VM test, standing in for the HTTP boot server:
serves fixed texts (the iPXE script) and Artifacts (segment lists, streamed
with sendfile), and records agent reports. Usage: artifact_server.py SPEC.json

SPEC: {"listen": [host, port], "texts": {path: text},
       "artifacts": {path: [[file, offset, length], ...]}, "reports": file}
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

spec = json.load(open(sys.argv[1]))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send_head(self):
        path = self.path.split("?")[0]
        if path in spec["texts"]:
            body = spec["texts"][path].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return body
        if path in spec["artifacts"]:
            segs = spec["artifacts"][path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(sum(s[2] for s in segs)))
            self.end_headers()
            return segs
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def do_HEAD(self):
        self._send_head()

    def do_GET(self):
        what = self._send_head()
        if isinstance(what, bytes):
            self.wfile.write(what)
        elif isinstance(what, list):
            self.wfile.flush()
            for path, offset, length in what:
                with open(path, "rb") as f:
                    sent = 0
                    while sent < length:
                        n = os.sendfile(self.connection.fileno(), f.fileno(), offset + sent,
                                        length - sent)
                        if n == 0:
                            raise OSError("short file")
                        sent += n

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode(errors="replace")
        with open(spec["reports"], "a") as f:
            f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization"),
                                "body": body, "ip": self.client_address[0]}) + "\n")
        out = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        sys.stderr.write("http: " + fmt % args + "\n")


ThreadingHTTPServer(tuple(spec["listen"]), Handler).serve_forever()
