"""`tinycnn serve`'s HTTP endpoints, called directly (the page itself: test_serve_browser.py)."""
import base64
import contextlib
import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

import tinycnn
from tinycnn import cli, models, serve
from tinycnn.preprocess import to_mnist

from browser import running_server


@pytest.fixture(scope="module")
def model():
    """An untrained fastnet with MNIST's preprocessing: the HTTP layer does not need accuracy."""
    m = models.fastnet(seed=0)
    m.preprocessing = {"scale": 1 / 255, "mean": 0.1307, "std": 0.3081}
    m.class_names = [str(i) for i in range(10)]
    return m


@pytest.fixture
def url(model):
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    with running_server(model, "test-model") as url:
        yield url
    tinycnn.set_backend(previous)


def request(url, method, path, body=None, headers=None):
    """-> (status, headers dict, body bytes), the path sent exactly as given."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def raw(url, data, end_request=False):
    """Send raw bytes on a new connection (then end the request's side of it if asked);
    -> the whole answer as text. "Host: HOST" in data becomes this server's host:port."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data.replace(b"Host: HOST", f"Host: {host}:{port}".encode()))
        if end_request:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def seven_png():
    """A 7 drawn dark on white, as the page's pad sends it."""
    im = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(im).line([(60, 50), (220, 50), (110, 240)], fill=0, width=22, joint="curve")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue(), im


def png_of(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def with_garbage_exif(png):
    """The PNG with an eXIf chunk that is not EXIF (Pillow raised SyntaxError on it: a 500)."""
    blob = b"garbage!!"
    return png[:33] + struct.pack(">L", len(blob)) + b"eXIf" + blob + struct.pack(">L", zlib.crc32(b"eXIf" + blob)) + png[33:]


def post(url, body, content_type="image/png"):
    status, headers, data = request(url, "POST", "/api/predict", body, {"Content-Type": content_type})
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(data)


def unpack(b64):
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


def test_page_and_its_files_are_served_with_a_strict_policy(url):
    status, headers, body = request(url, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<canvas id="pad"' in body and b'src="app.js"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css"), ("/index.html", "text/html")):
        status, headers, body = request(url, "GET", path + "?v=1")        # a query string is ignored
        assert status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 500
    # Offline: nothing in the page refers to another host (no CDN, fonts or scripts).
    for name in os.listdir(serve.STATIC_DIR):
        text = open(os.path.join(serve.STATIC_DIR, name), encoding="utf-8").read()
        assert "http:" not in text and "https:" not in text and "//cdn" not in text, name
    assert sorted(os.listdir(serve.STATIC_DIR)) == sorted({f for f, _ in serve.STATIC_FILES.values()})


def test_model_info(url, model):
    status, _, body = request(url, "GET", "/api/model")
    info = json.loads(body)
    assert status == 200 and info["name"] == "test-model" and info["parameters"] == model.num_parameters()
    assert info["layers"][0] == "conv2d_0 (Conv2D)" and info["provenance"] is None
    assert info["max_body_bytes"] == serve.MAX_BODY_BYTES        # (the page sends photos up to it)
    line = serve.model_info(tinycnn.pretrained("mnist"), "mnist", pretrained="mnist")["provenance"]
    accuracy = tinycnn.zoo.provenance("mnist")["test_accuracy"]
    assert line == (f"pretrained fastnet, {accuracy:.2%} right on the 10,000 MNIST test images "
                    "(how it was made: tinycnn/pretrained/mnist.json)")


def test_predict_answers_what_the_model_computes(url, model):
    png, im = seven_png()
    status, answer = post(url, png)
    assert status == 200, answer
    seen = to_mnist(im)
    proba = model.predict_proba(model.preprocess(seen[None]))[0]
    np.testing.assert_allclose(answer["probabilities"], proba, atol=2e-6)
    assert answer["class_index"] == int(proba.argmax()) and answer["predicted"] == str(proba.argmax())
    assert answer["class_names"] == [str(i) for i in range(10)]
    # The 28x28 picture the model received, as 0..255.
    assert (answer["input"]["width"], answer["input"]["height"]) == (28, 28)
    np.testing.assert_array_equal(unpack(answer["input"]["data"]), np.rint(seen * 255).ravel())
    # Each convolution's maps: fastnet has 24 of 24x24, then 32 of 8x8; signed, 128 = 0.
    shapes = [(l["count"], l["height"], l["width"]) for l in answer["layers"]]
    assert shapes == [(24, 24, 24), (32, 8, 8)]
    conv0 = model.layers[0].forward(model.preprocess(seen[None]), training=False)[0]
    assert answer["layers"][0]["scale"] == pytest.approx(np.abs(conv0).max(), rel=1e-5)
    decoded = (unpack(answer["layers"][0]["data"]).astype(np.float32) - 127.5) / 127.5 * answer["layers"][0]["scale"]
    np.testing.assert_allclose(decoded, conv0.ravel(), atol=answer["layers"][0]["scale"] / 127)
    # Saliency: the gradient of the predicted class's logit, and ink x gradient; same encoding,
    # scaled to the 99th percentile of |value| (larger ones clipped).
    grad, _ = tinycnn.saliency.saliency(model, model.preprocess(seen[None]), [answer["class_index"]])
    for key, expected in (("saliency", grad[0, 0]), ("ink_times_gradient", seen * grad[0, 0])):
        m = answer[key]
        assert m["scale"] == pytest.approx(np.percentile(np.abs(expected), 99), rel=1e-5)
        shown = (unpack(m["data"]).astype(np.float32) - 127.5) / 127.5 * m["scale"]
        clipped = np.clip(expected, -m["scale"], m["scale"]).ravel()
        np.testing.assert_allclose(shown, clipped, atol=m["scale"] / 127)
        assert (np.abs(expected) > m["scale"]).mean() <= 0.011
    no_ink = seen.ravel() == 0                                       # no ink, no push
    assert np.all(unpack(answer["ink_times_gradient"]["data"])[no_ink] == 128)
    assert 0 < answer["seconds"] < 30 and answer["note"] is None


def test_predict_notes_a_dot_and_a_tiny_digit(url):
    """The page read a dot as '0, 100% sure' with nothing said: the JSON carries
    preprocess.read_digit's note, and the page shows it."""
    from PIL import Image, ImageDraw
    dot = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(dot).ellipse([120, 120, 142, 142], fill=0)
    tiny = Image.fromarray(255 - np.eye(9, dtype=np.uint8) * 255)
    for picture, expected in ((dot, "its ink is one solid blob ("), (tiny, "the digit is 9x9 pixels, enlarged")):
        png = io.BytesIO()
        picture.save(png, format="PNG")
        status, answer = post(url, png.getvalue())
        assert status == 200 and answer["note"].startswith(expected), answer.get("note")


def test_data_urls_raw_and_in_json_give_the_same_answer(url):
    png, _ = seven_png()
    data_url = b"data:image/png;base64," + base64.b64encode(png)
    _, direct = post(url, png)
    for body, kind in ((data_url, "text/plain"), (json.dumps({"image": data_url.decode()}), "application/json")):
        status, answer = post(url, body, kind)
        assert status == 200 and answer["probabilities"] == direct["probabilities"]


@pytest.mark.parametrize("body, kind, message", [
    (b"not an image at all", "image/png", "not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)"),
    (seven_png()[0][:200], "image/png", "cannot read this image"),                  # truncated PNG
    (b"", "image/png", "empty request body"),
    (png_of(np.full((280, 280), 255, np.uint8)), "image/png", "looks blank"),       # nothing drawn
    pytest.param(with_garbage_exif(seven_png()[0]), "image/png", "image: cannot read this image (damaged EXIF "
                 "block: ", id="garbage-exif"),
    (b"data:image/png;base64,@@@", "text/plain", "invalid base64"),
    (b"data:image/png,abc", "text/plain", "must be base64-encoded"),
    (b"{not json", "application/json", '{"image": "data:image/...;base64,..."}'),
    (b'{"picture": 1}', "application/json", '{"image": "data:image/...;base64,..."}'),
    pytest.param(b"[" * 100_000, "application/json", '{"image": "data:image/...;base64,..."}',
                 id="nested-json"),                                 # RecursionError: was a 500
])
def test_bad_images_get_a_400_json_error(url, body, kind, message):
    status, answer = post(url, body, kind)
    assert status == 400 and message in answer["error"], answer
    assert post(url, seven_png()[0])[0] == 200                      # and the server still serves


def test_huge_image_refused_from_its_header(url):
    big = io.BytesIO()
    Image.new("1", (8000, 6000), 1).save(big, "PNG")               # 48 Mpixels, a few KB on the wire
    status, answer = post(url, big.getvalue())
    assert status == 400 and "8000x6000 pixels is above the limit of 40,000,000" in answer["error"]


def test_oversized_or_unsized_body_refused_unread(url):
    answer = raw(url, b"POST /api/predict HTTP/1.1\r\nHost: HOST\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 9000000\r\n\r\n")           # headers only: it must not wait for the body
    assert answer.startswith("HTTP/1.0 413") and "the limit is 8,388,608" in answer
    answer = raw(url, b"POST /api/predict HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert answer.startswith("HTTP/1.0 411") and "Content-Length header is required" in answer
    answer = raw(url, b"POST /api/predict HTTP/1.1\r\nHost: HOST\r\nContent-Length: -5\r\n\r\n")
    assert answer.startswith("HTTP/1.0 400") and "bad Content-Length '-5'" in answer


def test_short_or_stalled_body(url, monkeypatch):
    head = b"POST /api/predict HTTP/1.1\r\nHost: HOST\r\nContent-Length: 1000\r\n\r\n0123456789"
    answer = raw(url, head, end_request=True)                       # 10 of 1000 bytes, then the end
    assert answer.startswith("HTTP/1.0 400") and "request body ended after 10 of 1,000 bytes" in answer
    monkeypatch.setattr(serve.Handler, "timeout", 0.5)
    answer = raw(url, head)                                          # 10 of 1000 bytes, then silence
    assert answer.startswith("HTTP/1.0 408") and "request body not received within 0.5 s" in answer


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_only_get_and_post(url, method):
    status, headers, body = request(url, method, "/")
    assert status == 405 and headers["Allow"] == "GET, POST"
    if method != "HEAD":
        assert json.loads(body)["error"] == f"method {method} not allowed (only GET and POST)"


def test_unknown_method_and_garbage_request_line(url):
    assert raw(url, b"BREW /pot HTTP/1.1\r\nHost: HOST\r\n\r\n").startswith("HTTP/1.0 501")
    answer = raw(url, b"this is not http\r\n\r\n")     # no HTTP version: answered HTTP/0.9 style, body only
    assert json.loads(answer) == {"error": "Bad request version ('http')"}


@pytest.mark.parametrize("path", [
    "/../tinycnn/serve.py", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E%2Fserve.py",
    "/static/../serve.py", "/..%2fserve.py", "//etc/passwd", "/etc/passwd", "/serve.py", "/app.js/..",
    "/nope", "/api/predict", "/static/app.js", "/.%2e/zoo.py",
])
def test_nothing_outside_the_static_files_is_served(url, path):
    status, _, body = request(url, "GET", path)
    assert status == 404 and json.loads(body)["error"].startswith("not found")
    assert b"import" not in body and b"root:" not in body


def test_absolute_form_urls_and_unknown_post_paths(url):
    answer = raw(url, b"GET http://127.0.0.1/../tinycnn/serve.py HTTP/1.1\r\nHost: HOST\r\n\r\n")
    assert answer.startswith("HTTP/1.0 404") and "import" not in answer
    status, _, body = request(url, "POST", "/api/other", b"x")
    assert status == 404 and "POST goes to /api/predict" in json.loads(body)["error"]


def test_concurrent_requests_share_the_model_safely(url):
    png, _ = seven_png()
    expected = post(url, png)[1]
    answers = [None] * 8

    def one(i):
        answers[i] = post(url, png)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, answer in answers:
        assert status == 200
        assert answer["probabilities"] == expected["probabilities"] and answer["saliency"] == expected["saliency"]
        assert answer["layers"] == expected["layers"]


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil.example:{port}",
                                  "127.0.0.1:{other}", "localhost", "127.0.0.1:{port}@evil.example",
                                  "2130706433:{port}", "[::1:{port}", "10.0.0.1:{port}", ""])
def test_host_header_must_name_this_server(url, host):
    """DNS rebinding: a page at evil.example re-points its name at 127.0.0.1 and calls us; its
    requests carry Host: evil.example. Only this server's own names and loopback addresses pass."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    host = host.format(port=port, other=port + 1)
    for method, path in (("GET", "/api/model"), ("GET", "/"), ("POST", "/api/predict")):
        answer = raw(url, f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())
        status, _, body = answer.partition("\r\n\r\n")
        assert status.startswith("HTTP/1.0 421") and "application/json" in status, answer
        assert json.loads(body)["error"] == (f"Host {host!r} does not name this server; open {url} (other "
                                             "names are refused: a web page may have pointed its own name here)")


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}"])
def test_own_names_are_served(url, host):
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    answer = raw(url, f"GET /api/model HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n".encode())
    assert answer.startswith("HTTP/1.0 200") and '"name": "test-model"' in answer


def test_no_host_or_two_hosts_refused(url):
    answer = raw(url, b"GET /api/model HTTP/1.0\r\n\r\n")
    assert answer.startswith("HTTP/1.0 400") and '{"error": "a Host header is required"}' in answer
    answer = raw(url, b"GET /api/model HTTP/1.1\r\nHost: HOST\r\nHost: evil.example\r\n\r\n")
    assert answer.startswith("HTTP/1.0 400") and '{"error": "more than one Host header"}' in answer


def test_host_rules_of_a_server_open_to_the_network(model):
    server = serve.DigitServer(model, "m", "0.0.0.0", 0, log=False)
    try:
        port = server.server_address[1]
        for ok in (f"192.168.1.20:{port}", f"[fe80::1]:{port}", f"localhost:{port}",
                   f"{socket.gethostname()}:{port}", f"127.0.0.1:{port}"):
            assert server.host_problem(ok) is None, ok
        for bad in (f"evil.example:{port}", f"192.168.1.20:{port + 1}", "192.168.1.20"):
            assert server.host_problem(bad).startswith(f"Host {bad!r} does not name this server"), bad
    finally:
        server.server_close()


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://127.0.0.1:{port}",
                                    "http://127.0.0.1:{other}", "http://evil.example:{port}"])
def test_posts_from_other_sites_pages_refused(url, origin):
    """A page of any site may POST a "simple" request (text/plain) to 127.0.0.1: the browser
    sends it (it only hides the answer), so the server would decode what the page chose."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    origin = origin.format(port=port, other=port + 1)
    status, headers, body = request(url, "POST", "/api/predict", seven_png()[0],
                                    {"Content-Type": "text/plain", "Origin": origin})
    assert status == 403 and json.loads(body)["error"] == \
        f"requests from pages of other sites are refused (Origin {origin!r})"
    status, _, _ = request(url, "POST", "/api/predict", seven_png()[0], {"Origin": url.rstrip("/")})
    assert status == 200                                            # the page itself


@pytest.mark.parametrize("length, status, message", [
    ("\u00b2", 400, "bad Content-Length '\u00b2'"),                 # "²".isdigit(), but int() refuses it
    ("9" * 5000, 413, "request body is 999,999,999,999,999,999... bytes; the limit is 8,388,608"),
    ("0" * 30 + "5", 400, "request body ended after 0 of 5 bytes"),
])
def test_odd_content_lengths_are_client_errors(url, length, status, message):
    answer = raw(url, f"POST /api/predict HTTP/1.1\r\nHost: HOST\r\nContent-Length: {length}\r\n\r\n".encode("latin-1"),
                 end_request=True)
    assert answer.startswith(f"HTTP/1.0 {status}") and message in json.loads(answer.split("\r\n\r\n")[1])["error"]


def trickle(url, head):
    """Send `head`, then one byte every 0.2 s (each renews a per-read timeout) until the
    server answers or closes; returns (its first bytes, b"" when closed unanswered; seconds)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.format(host=f"{host}:{port}").encode())
        started = time.monotonic()
        s.settimeout(0.2)
        answer = None
        while answer is None and time.monotonic() - started < 10:
            try:
                s.sendall(b"x")
                answer = s.recv(65536)
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
        stopped = time.monotonic() - started
        s.settimeout(5)                   # the rest of the answer (it may come in more than one piece)
        with contextlib.suppress(ConnectionResetError):
            while answer and (more := s.recv(65536)):
                answer += more
    return answer, stopped


def test_trickled_body_cut_off_at_the_deadline(url, monkeypatch):
    """One byte every 0.2 s never trips the per-read timeout; the whole body has a deadline."""
    monkeypatch.setattr(serve, "BODY_SECONDS", 1)
    answer, stopped = trickle(url, "POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n")
    text = answer.decode("latin-1")
    assert text.startswith("HTTP/1.0 408") and "request body not received within 1 s" in text, text
    assert stopped < 3


def test_trickled_request_line_and_headers_cut_off_at_the_deadline(url, monkeypatch):
    """A byte every 0.2 s renews the per-read timeout for ever (16 clients sending a byte every
    5 s held every slot); the request line and headers have a deadline from the connection's
    start, after which the connection is closed."""
    monkeypatch.setattr(serve, "HEAD_SECONDS", 1)
    answer, stopped = trickle(url, "GET /api/model HTTP/1.1\r\nHost: {host}\r\nX-Slow: ")
    assert answer == b"" and 0.8 < stopped < 3, (answer, stopped)


def test_overlong_request_line_and_header_answered_with_logging_on(model, capsys):
    """log_request read self.path, which http.server sets only once it has parsed the request
    line: with logging on (the CLI's default) a 414 or a garbage line lost its answer to an
    AttributeError and the connection was closed unanswered."""
    server = serve.DigitServer(model, "m", "127.0.0.1", 0, log=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Exactly the bytes the server reads before refusing: more, left unread, could make its
    # close a reset that loses the answer.
    head = b"GET / HTTP/1.1\r\nHost: HOST\r\n"
    try:
        long_line = raw(server.url, b"GET /" + b"a" * (65537 - 5))
        long_header = raw(server.url, head + b"X: " + b"a" * (65537 - 3))
        garbage = raw(server.url, b"this is not http\r\n\r\n")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert long_line.startswith("HTTP/1.0 414 Request-URI Too Long\r\n")
    assert json.loads(long_line.split("\r\n\r\n")[1]) == {"error": "Request-URI Too Long"}
    assert long_header.startswith("HTTP/1.0 431 Request Header Fields Too Large\r\n")
    assert json.loads(long_header.split("\r\n\r\n")[1]) == {"error": "Line too long"}
    assert json.loads(garbage) == {"error": "Bad request version ('http')"}
    assert capsys.readouterr().err == ("tinycnn serve: request line -> 414\ntinycnn serve: GET / -> 431\n"
                                       "tinycnn serve: request line -> 400\n")


def test_connections_beyond_the_cap_wait_for_a_free_thread(model):
    """Idle connections (a slow or hostile client) hold at most max_connections threads; a
    request beyond them waits unread and is answered once one is freed."""
    server = serve.DigitServer(model, "m", "127.0.0.1", 0, log=False, max_connections=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address
    idle = [socket.create_connection((host, port)) for _ in range(12)]
    try:
        time.sleep(0.5)
        handlers = [t for t in threading.enumerate() if t.name.startswith("Thread-") and "process_request" in t.name]
        assert len(handlers) <= 2, handlers
        assert server.slots._value == 0                             # both taken by the first idle ones
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.sock = socket.create_connection((host, port), timeout=1)
        conn.request("GET", "/api/model")
        with pytest.raises(TimeoutError):                           # waits behind the idle ones...
            conn.getresponse()
        for s in idle:
            s.close()
        conn.sock.settimeout(30)
        r = conn.getresponse()                                      # ...and is answered once they go
        assert r.status == 200 and json.loads(r.read())["name"] == "m"
        conn.close()
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_one_image_decoded_at_a_time(url, monkeypatch):
    """A 40-megapixel image is 160 MB decoded: N requests at once must not hold N of them."""
    inside, most = [0], [0]
    real = serve.preprocess.decode_image

    def counting(f, name):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        try:
            return real(f, name)
        finally:
            inside[0] -= 1
    monkeypatch.setattr(serve.preprocess, "decode_image", counting)
    png, _ = seven_png()
    threads = [threading.Thread(target=post, args=(url, png)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


def post_seven_to(broken):
    """(status, answer) of a 7 posted to a server running `broken` on the NumPy kernels, as
    `tinycnn serve` does; a RuntimeWarning (on the server's stderr) fails the test."""
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    try:
        with running_server(broken, "broken") as url, warnings.catch_warnings():
            warnings.simplefilter("error")
            return post(url, seven_png()[0])
    finally:
        tinycnn.set_backend(previous)


def test_infinite_outputs_are_a_500_not_invalid_json(model):
    """Finite weights can still overflow to an infinite logit. The answer was a 200 naming a
    digit, with NaN in its JSON (which no browser's JSON.parse accepts)."""
    broken = models.fastnet(seed=0)
    broken.layers[-1].params["W"][:] = 3e38
    status, answer = post_seven_to(broken)
    assert status == 500 and answer == {"error": "the model's output is NaN or infinite for this image; "
                                                 "the model's weights are broken"}


def test_port_in_use_is_one_line_error(tmp_path, model, capsys, monkeypatch):
    monkeypatch.setenv("TINYCNN_BACKEND", tinycnn.get_backend())     # keep this process's backend
    path = model.save(tmp_path / "m.npz")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", str(path), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tinycnn serve: error: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1
    assert cli.main(["serve", str(path), "--port", "70000"]) == 1
    assert "--port must be between 0 and 65535, got 70000" in capsys.readouterr().err


def test_cli_serve_prints_url_warns_off_loopback_and_stops_cleanly_on_ctrl_c(tmp_path, model):
    path = model.save(tmp_path / "m.npz")
    # Ctrl-C as in a terminal: a test run started in the background (`cmd &`) ignores SIGINT,
    # and a child inherits that, so the server would never see it (the test then hung 30 s).
    proc = subprocess.Popen([sys.executable, "-m", "tinycnn", "serve", str(path), "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()                       # printed once the port is bound
        assert line.startswith(f"tinycnn serve: {path} at http://127.0.0.1:") and "(Ctrl-C stops)" in line
        url = line.split(" at ")[1].split()[0]
        assert request(url, "GET", "/")[0] == 200
        assert post(url, seven_png()[0])[0] == 200
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert out.strip() == "tinycnn serve: stopped"
    assert err.startswith("WARNING: listening on 0.0.0.0, not just this machine") and err.count("\n") == 1
    assert "Traceback" not in err
