"""A fault-injecting HTTP proxy for the object-storage tests: forwards every request to UPSTREAM,
except every EVERY-th request, which alternately gets a 503 answer or has its connection dropped
without an answer (after the request was read, before it reaches upstream).

Usage: python3 fault_proxy.py PORT UPSTREAM [EVERY]      (UPSTREAM like http://127.0.0.1:5000)
Prints "ready PORT" once listening, then one line per request: "<n> <method> <path> -> <what>".
"""

import http.client
import http.server
import socket
import sys
import threading
import urllib.parse

PORT, UPSTREAM = int(sys.argv[1]), urllib.parse.urlsplit(sys.argv[2])
EVERY = int(sys.argv[3]) if len(sys.argv) > 3 else 5
COUNT = [0]
LOCK = threading.Lock()
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        if n % EVERY == 0:
            if (n // EVERY) % 2 == 1:
                self.send_response(503, "Slow Down")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                what = "503"
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                what = "dropped"
            print(n, self.command, self.path, "->", what, flush=True)
            return
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()
        print(n, self.command, self.path, "->", resp.status, flush=True)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", server.server_address[1], flush=True)
server.serve_forever()
