#!/usr/bin/env python3
"""Serves the Git repositories below ROOT over HTTP (Git's smart protocol, read-only) at
ADDRESS:PORT, running `git http-backend` per request as a web server in front of Git would.

    python3 scripts/git-http.py ROOT ADDRESS PORT

The demo serves its example repository this way on the local control plane's bridge address,
where the agent and the webhook, in pods, reach it. Pushes are refused (no receive-pack).
"""

import http.server
import os
import subprocess
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        self.backend()

    def do_POST(self):
        self.backend()

    def backend(self):
        path, _, query = self.path.partition("?")
        if "git-receive-pack" in path or "git-receive-pack" in query:
            self.send_error(403, "read-only remote")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        sys.stderr.write("git-http: %s %s\n" % (self.address_string(), fmt % args))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ROOT = os.path.abspath(sys.argv[1])
    server = http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Handler)
    server.serve_forever()
