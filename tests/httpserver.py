"""A small HTTP server on 127.0.0.1 for download tests. Each URL is /<mode>/<file name>:

    ok       the file
    missing  404
    flaky    500 for the first `flaky_failures` requests of each file, then the file
    down     500 always
    corrupt  the file with one byte changed
    short    Content-Length says more than is sent, then the connection closes
    stall    headers, then silence for `stall_seconds` (longer than the client's read timeout)
    slow     the file in small pieces with pauses (for concurrent downloads)
    trickle  the file one byte every `trickle_seconds` (never trips a read timeout)
    headers  the status line, then a 100-byte header one byte every `trickle_seconds`, then
             the file (a client whose deadline starts at the body waits for all of it)
    endless  no Content-Length, then zeros until the client hangs up (or 2 GiB)
    huge     Content-Length 10**12, then the file
    superscript  Content-Length "\u00b2" ("²": str.isdigit() says yes, int() refuses it), then the file
    elsewhere  302 to /ok/<file> on "localhost" (another host name than 127.0.0.1)
    tofile   302 to file:///etc/passwd
    loop     302 to itself, forever
    inflate  Content-Encoding: gzip; the body is a gzip of `inflate_bytes` zeros (a small
             body that a client which decodes it would turn into a huge file)
"""
import gzip
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files, flaky_failures=2, stall_seconds=3.0, trickle_seconds=0.5,
                 inflate_bytes=64 << 20):
        self.files = dict(files)
        self.flaky_failures = flaky_failures
        self.stall_seconds = stall_seconds
        self.trickle_seconds = trickle_seconds
        self.inflate_bytes = inflate_bytes
        self.sent = Counter()         # body bytes written per request path
        self.requests = []
        self.counts = Counter()
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                server.counts[self.path] += 1
                _, mode, name = self.path.split("/", 2)
                body = server.files.get(name)
                redirect = {"elsewhere": f"http://localhost:{server.port}/ok/{name}",
                            "tofile": "file:///etc/passwd", "loop": self.path}.get(mode)
                if redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if mode == "inflate":
                    return self.inflate()
                if mode == "headers":
                    return self.trickle_headers(body)
                if body is None or mode == "missing":
                    return self.send_error(404, "Not Found")
                if mode == "down" or (mode == "flaky" and server.counts[self.path] <= server.flaky_failures):
                    return self.send_error(500, "Internal Server Error")
                if mode == "corrupt":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                length = {"short": len(body) + 100, "huge": 10 ** 12, "endless": None,
                          "superscript": "\u00b2"}.get(mode, len(body))
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                if mode in ("trickle", "endless"):
                    return self.dribble(body, mode)
                if mode == "stall":
                    server.stop.wait(server.stall_seconds)
                    return
                if mode == "slow":
                    for i in range(0, len(body), 512):
                        self.wfile.write(body[i:i + 512])
                        self.wfile.flush()
                        time.sleep(0.002)
                    return
                self.wfile.write(body)
                if mode == "short":
                    self.close_connection = True

            def inflate(self):
                data = gzip.compress(bytes(server.inflate_bytes), compresslevel=9, mtime=0)
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def trickle_headers(self, body):
                header = b"X-Slow: " + b"." * 91 + b"\r\n"
                try:
                    self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                    for i in range(len(header)):
                        self.wfile.write(header[i:i + 1])
                        self.wfile.flush()
                        if server.stop.wait(server.trickle_seconds):
                            return
                    self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
                except OSError:          # the client hung up: that is the point
                    pass
                self.close_connection = True

            def dribble(self, body, mode):
                """trickle: one byte at a time; endless: 64 KiB of zeros at a time. Stops when
                the client hangs up or the server shuts down."""
                piece = bytes(1 << 16)
                try:
                    for i in range(len(body) if mode == "trickle" else 2 ** 15):
                        if server.stop.is_set():
                            break
                        data = body[i:i + 1] if mode == "trickle" else piece
                        self.wfile.write(data)
                        self.wfile.flush()
                        server.sent[self.path] += len(data)
                        if mode == "trickle":
                            server.stop.wait(server.trickle_seconds)
                except OSError:          # the client hung up: that is the point
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def mirror(self, mode):
        return f"{self.url}/{mode}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
