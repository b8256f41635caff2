"""`tinycnn serve`: a local web page where one draws a digit and sees inside the network.

Standard library only (http.server); the page is plain HTML, CSS and JavaScript in
tinycnn/static/, with nothing fetched from elsewhere, so it works offline.

    GET  /  (and /app.js, /style.css)   the page: the files in tinycnn/static/, nothing else
    GET  /api/model                     the model being served: name, layers, provenance;
                                        and max_body_bytes, the largest request taken
    POST /api/predict                   an image -> what the model makes of it (JSON, below)

POST /api/predict takes the image as the raw request body (PNG, JPEG, ... any format Pillow
reads) or as a data URL ("data:image/png;base64,...", raw or as {"image": "<data URL>"} JSON).
It answers
    {"predicted": "7", "class_index": 7, "class_names": [...], "probabilities": [10 floats],
     "input":    {"width": 28, "height": 28, "data": b64},          what the model receives
     "layers":   [{"name", "kernel_size", "count", "width", "height", "scale", "data": b64}],
     "saliency": {"width": 28, "height": 28, "scale", "data": b64},   d score / d pixel
     "ink_times_gradient": {... the same},                            pixel * saliency
     "note":     null, or why the reading deserves less trust (preprocess.read_digit: a
                 small digit, a dot, two digits, faint ink, dark edges left out),
     "seconds", "cpu_seconds": wall-clock and CPU time spent on this request in the server}
where each "data" is base64 of uint8 values, row-major (maps one after another). "input" is
0 (black) to 255 (ink). Feature maps and saliency are signed: 128 is zero and 0 / 255 are
-scale / +scale, with one scale per layer (the largest |value|), so maps of a layer compare;
for the saliency maps the 99th percentile of |value| (the few larger values are clipped).

It is bounded like a real server: loopback only unless asked (a loud warning otherwise), only
Host and Origin headers that name this server (421 / 403 otherwise: a web page the user visits
can neither reach it through a DNS name rebound to 127.0.0.1 nor post images to it), at most
MAX_CONNECTIONS requests handled at once (more wait, unread, in the listen queue), one image
decoded at a time, a request size limit (413), deadlines for the request line and headers (then
the connection is closed) and for the whole body (408), images checked before decoding (400
with a JSON error for anything that is not a readable, non-blank picture of sane size), only GET
and POST (405), no file outside the static folder (the allowed URLs are a fixed list), one model
shared under a lock (layers keep caches between forward and backward), and Ctrl-C stops it
cleanly.
"""
import base64
import binascii
import io
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

from . import preprocess
from .cli import printable
from .explain import look_inside

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# URL -> (file in STATIC_DIR, content type). Only these are served: no path is ever joined
# from the URL, so "..", %2e%2e or absolute paths cannot reach another file.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_BODY_BYTES = 8 * 2**20        # room for a photo (the page sends a photo's own file; a drawing, its pad's PNG)
BODY_SECONDS = 60                 # for the whole body: a client trickling a byte at a time is cut off
HEAD_SECONDS = 20                 # for the request line and headers, from when a thread takes the connection
MAX_CONNECTIONS = 16              # request threads at once; a browser opens at most 6 per server
# The page may load and contact only this server; images may also be data: and blob: URLs.
CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadRequest(ValueError):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def decode_image(body, content_type=""):
    """Request body -> PIL image, checked: a data URL (raw or in JSON) or an image file's bytes.
    Raises BadRequest naming what was wrong."""
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            body = json.loads(body)["image"].encode("ascii")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):   # [[[[... nested
            raise BadRequest('JSON body must be {"image": "data:image/...;base64,..."}') from None
    if body[:5] == b"data:":
        header, _, payload = body.partition(b",")
        if not header.endswith(b";base64"):
            raise BadRequest("data URL must be base64-encoded (data:image/png;base64,...)")
        try:
            body = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("data URL: invalid base64") from None
    if not body:
        raise BadRequest("empty request body: send an image (PNG, JPEG, ...)")
    try:                                   # the same bounded decoder as `tinycnn predict`
        return preprocess.decode_image(io.BytesIO(body), "image")
    except ValueError as err:
        raise BadRequest(str(err)) from None


def _b64_uint8(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def _signed(a, percentile=100):
    """Signed values -> (base64 uint8 with 128 at zero, the scale that maps to 0 and 255).
    The scale is that percentile of |a|; values beyond it are clipped (gradients have a few
    outliers that would otherwise leave every other pixel near white)."""
    a = np.asarray(a, np.float64)      # (|a| near float32's largest would overflow below)
    scale = float(np.percentile(np.abs(a), percentile)) or float(np.abs(a).max()) or 1.0
    return _b64_uint8(np.clip(np.rint(127.5 + 127.5 * a / scale), 0, 255)), scale


def prediction_json(model, seen):
    """look_inside(model, seen) as the JSON-able dict that /api/predict sends."""
    with np.errstate(over="ignore", invalid="ignore"):     # checked just below, said once
        r = look_inside(model, seen)
    # Finite weights can still overflow, in the output or only inside (the page draws it all)
    for what, values in [("the model's output", r["proba"])] + [
            (f"layer {layer['name']}'s feature maps", layer["maps"]) for layer in r["layers"]] + [
            ("the saliency map", r["saliency"])]:
        if not np.isfinite(values).all():
            raise FloatingPointError(f"{what} is NaN or infinite for this image; the model's "
                                     "weights are broken")
    names = [str(n) for n in (model.class_names or range(len(r["proba"])))]
    layers = []
    for layer in r["layers"]:
        count, h, w = layer["maps"].shape
        data, scale = _signed(layer["maps"])
        layers.append({"name": layer["name"], "kernel_size": layer["kernel_size"], "count": count,
                       "width": w, "height": h, "scale": scale, "data": data})
    maps = {}
    for key in ("saliency", "ink_times_gradient"):
        data, scale = _signed(r[key], percentile=99)
        maps[key] = {"width": seen.shape[1], "height": seen.shape[0], "scale": scale, "data": data}
    return {"predicted": names[r["predicted"]], "class_index": r["predicted"], "class_names": names,
            "probabilities": [round(float(p), 6) for p in r["proba"]],
            "input": {"width": seen.shape[1], "height": seen.shape[0],
                      "data": _b64_uint8(np.rint(np.clip(seen, 0, 1) * 255))},
            "layers": layers, **maps}


def model_info(model, name, pretrained=None):
    """What /api/model sends: the model's name, its layers and, for a pretrained model (its
    name in zoo.PRETRAINED), a line of its provenance."""
    from . import zoo
    info = {"name": name, "parameters": int(model.num_parameters()),
            "layers": [f"{n} ({layer.name})" for n, layer in zip(model.names, model.layers)],
            "provenance": None, "max_body_bytes": MAX_BODY_BYTES}      # (the page sends photos up to it)
    if pretrained:
        p = zoo.provenance(pretrained)
        info["provenance"] = (f"pretrained {p['options']['arch']}, {p['test_accuracy']:.2%} right on the "
                              f"10,000 MNIST test images (how it was made: tinycnn/pretrained/{pretrained}.json)")
    return info


def split_host(value):
    """A Host header (or an Origin's host part) -> (lower-case name or address, port or None);
    None when it is not of the form name, name:port, [IPv6] or [IPv6]:port."""
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        name, _, port = value.partition(":")
    if not name or (port and not (port.isascii() and port.isdigit() and len(port) <= 5)):
        return None
    return name.lower(), int(port) if port else None


class DigitServer(ThreadingHTTPServer):
    """The HTTP server: one model, shared by the request threads under `lock`, and at most
    `max_connections` request threads at once (`slots`)."""

    daemon_threads = True                 # a hung client never keeps the process alive
    request_queue_size = 64               # connections waiting for a free slot (socketserver: 5)

    def __init__(self, model, name, host="127.0.0.1", port=8000, log=True, pretrained=None,
                 max_connections=MAX_CONNECTIONS):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.model, self.name, self.log = model, name, log
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max_connections)
        self.closing = False
        self.info = model_info(model, name, pretrained)
        super().__init__((host, port), Handler)
        # Names a request may call this server by. DNS rebinding needs a name (the attacker's
        # domain, re-pointed at 127.0.0.1), so IP addresses are safe: the loopback ones for a
        # loopback server, any for one the user opened to the network.
        self.names = {"localhost", host.strip("[]").lower()}
        if not self.loopback_only:
            self.names.add(socket.gethostname().lower())

    def host_problem(self, value):
        """Why a Host header value does not name this server (a sentence), or None if it does."""
        parsed = split_host(value)
        if parsed is not None:
            name, port = parsed
            try:
                address_ok = ipaddress.ip_address(name).is_loopback or not self.loopback_only
            except ValueError:            # a name, not an address
                address_ok = False
            if (name in self.names or address_ok) and (port or 80) == self.server_address[1]:
                return None
        return (f"Host {value[:100]!r} does not name this server; open {self.url} (other names "
                "are refused: a web page may have pointed its own name here)")

    def process_request(self, request, client_address):
        """Start a thread for the connection once one of the `slots` is free; until then the
        connection waits unread and later ones queue in the kernel's listen backlog."""
        while not self.slots.acquire(timeout=0.5):
            if self.closing:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def shutdown(self):
        self.closing = True                  # a wait for a free slot gives up
        super().shutdown()

    @property
    def url(self):
        host, port = self.server_address[:2]
        if ipaddress.ip_address(host).is_unspecified:     # 0.0.0.0 / :: - reach it locally
            host = "127.0.0.1" if self.address_family == socket.AF_INET else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    @property
    def loopback_only(self):
        return ipaddress.ip_address(self.server_address[0]).is_loopback

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return                        # the client went away: nothing to report
        if self.log:
            print(f"tinycnn serve: error handling a request from {client_address[0]}: "
                  f"{type(err).__name__}: {err}", file=sys.stderr)


class _DeadlineReader(io.RawIOBase):
    """The connection's socket, read under the handler's `deadline`: each read waits at most
    min(Handler.timeout, time left), so a byte every few seconds cannot renew the wait."""

    def __init__(self, handler):
        self.handler = handler

    def readable(self):
        return True

    def readinto(self, buffer):
        handler = self.handler
        left = handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("past the deadline")
        handler.connection.settimeout(min(left, handler.timeout))
        try:
            return handler.connection.recv_into(buffer)
        finally:                          # the answer is written under the usual timeout
            handler.connection.settimeout(handler.timeout)


class Handler(BaseHTTPRequestHandler):
    def version_string(self):
        return "tinycnn"
    timeout = 30                          # seconds a client may take to send its request

    def setup(self):
        """Reads go through _DeadlineReader: the request line and headers must arrive within
        HEAD_SECONDS of the connection's start (http.server closes it on the TimeoutError), or
        16 clients sending a byte every 5 s would hold every slot for good."""
        super().setup()
        self.deadline = time.monotonic() + HEAD_SECONDS
        self.rfile.close()                # socketserver's reader, replaced (the socket stays open)
        self.rfile = io.BufferedReader(_DeadlineReader(self))

    # -- answers -----------------------------------------------------------------------------
    def _send(self, status, body, content_type, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj, extra=()):
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json", extra)

    def send_error(self, code, message=None, explain=None):
        """Every error, including http.server's own (bad request line, 501, ...), as JSON."""
        self.close_connection = True
        self._json(code, {"error": message or self.responses.get(code, ("error",))[0]},
                   [("Connection", "close")])

    def log_request(self, code="-", size="-"):
        if self.server.log and isinstance(code, int) and code >= 400:
            # No path when the request line itself was refused (414, no HTTP version): the
            # AttributeError here used to lose the answer.
            what = f"{self.command} {self.path[:100]}" if hasattr(self, "path") else "request line"
            # (escaped: the method and path are the client's bytes, escape sequences and all)
            print(f"tinycnn serve: {printable(what)} -> {code}", file=sys.stderr)

    def log_error(self, *args):
        pass                              # log_request reports the error's status line

    def parse_request(self):
        """http.server's parsing, then the Host check (every method) and, for a request a
        browser sent from a page (it has an Origin header), the Origin check: a page of
        another site may send a "simple" POST to any address, though it cannot read the answer."""
        if not super().parse_request():
            return False
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            self.send_error(400, "a Host header is required" if not hosts else "more than one Host header")
            return False
        problem = self.server.host_problem(hosts[0])
        if problem:
            self.send_error(421, problem)
            return False
        origin = self.headers.get("Origin")
        if origin is not None and (not origin.startswith("http://")
                                   or self.server.host_problem(origin[len("http://"):])):
            self.send_error(403, f"requests from pages of other sites are refused (Origin {origin[:100]!r})")
            return False
        return True

    # -- methods -----------------------------------------------------------------------------
    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/api/model":
            return self._json(200, self.server.info)
        if path not in STATIC_FILES:
            return self.send_error(404, f"not found: {path[:100]}")
        filename, content_type = STATIC_FILES[path]
        with open(os.path.join(STATIC_DIR, filename), "rb") as f:
            self._send(200, f.read(), content_type)

    def do_POST(self):
        path = urlsplit(self.path).path
        if path != "/api/predict":
            return self.send_error(404, f"not found: {path[:100]} (POST goes to /api/predict)")
        try:
            self._json(200, self._predict())
        except BadRequest as err:
            self.send_error(err.status, str(err))
        except FloatingPointError as err:     # the model's fault, said as such
            self.send_error(500, str(err))
        except Exception as err:          # a bug, not the client's fault: answer, keep serving
            if self.server.log:
                print(f"tinycnn serve: internal error: {type(err).__name__}: {err}", file=sys.stderr)
            self.send_error(500, "internal error (see the server's output)")

    def _predict(self):
        from .preprocess import read_digit
        started, cpu = time.perf_counter(), time.thread_time()
        body = self._read_body()
        with self.server.lock:            # also the decoding: one image's pixels in memory at a time
            image = decode_image(body, self.headers.get("Content-Type", ""))
            try:
                seen, note = read_digit(image)
            except ValueError as err:
                raise BadRequest(str(err).removeprefix("to_mnist: ")) from None
            out = prediction_json(self.server.model, seen)
        out["note"] = note
        out["seconds"] = round(time.perf_counter() - started, 4)
        out["cpu_seconds"] = round(time.thread_time() - cpu, 4)      # this thread's CPU time
        return out

    def _read_body(self):
        header = self.headers.get("Content-Length")
        if header is None:
            raise BadRequest("a Content-Length header is required", 411)
        digits = header.strip().lstrip("0") or "0"
        if not (digits.isascii() and digits.isdigit()):     # "²".isdigit() too, but int() fails
            raise BadRequest(f"bad Content-Length {header[:20]!r}")
        if len(digits) > 18 or int(digits) > MAX_BODY_BYTES:    # refused unread; then closed
            raise BadRequest(f"request body is {int(digits[:18]):,}{'...' if len(digits) > 18 else ''} "
                             f"bytes; the limit is {MAX_BODY_BYTES:,}", 413)
        length = int(digits)
        body = bytearray()
        self.deadline = time.monotonic() + BODY_SECONDS      # for every read (_DeadlineReader)
        try:
            while len(body) < length:
                chunk = self.rfile.read1(min(length - len(body), 2**16))
                if not chunk:
                    break
                body += chunk
        except TimeoutError:              # the client stopped sending (Handler.timeout), or the deadline
            waited = BODY_SECONDS if time.monotonic() >= self.deadline else self.timeout
            raise BadRequest(f"request body not received within {waited} s ({len(body):,} of "
                             f"{length:,} bytes)", 408) from None
        if len(body) != length:
            raise BadRequest(f"request body ended after {len(body):,} of {length:,} bytes")
        return bytes(body)

    def _not_allowed(self):
        self.close_connection = True
        self._json(405, {"error": f"method {self.command} not allowed (only GET and POST)"},
                   [("Allow", "GET, POST"), ("Connection", "close")])

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed


def serve(model, name, host="127.0.0.1", port=8000, out=sys.stdout, pretrained=None):
    """Serve the page until Ctrl-C; returns 0. Raises OSError if the address cannot be bound.
    pretrained: the model's name in zoo.PRETRAINED, if it is one (the page shows its provenance)."""
    server = DigitServer(model, name, host, port, pretrained=pretrained)
    if not server.loopback_only:
        where = host or "every address of this machine"          # (--host "" binds them all)
        print(f"WARNING: listening on {where}, not just this machine (loopback): anyone who can reach "
              f"it on port {server.server_address[1]} can use this page and its CPU. Use --host "
              "127.0.0.1 to keep it local.", file=sys.stderr)
    print(f"tinycnn serve: {name} at {server.url}  (Ctrl-C stops)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\ntinycnn serve: stopped", file=out)
    finally:
        server.server_close()
    return 0
