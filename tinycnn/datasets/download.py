"""Downloading one file from a list of mirrors, safely.

The file is streamed into a temporary file beside its destination, checked, and only then
renamed into place (os.replace is atomic on one filesystem). So:
- a crash, Ctrl-C or a failed check never leaves a partial file under the final name, and
  the temporary file is removed on the way out;
- two processes downloading the same file at once each write their own temporary file;
  whichever renames last wins, and both candidates were verified, so the result is whole.

Every attempt is bounded: at most max_bytes are accepted (a larger Content-Length is refused
before the body is read; a longer body is cut off) and it must end within a total deadline,
from the connection on (a watchdog shuts the socket when it passes), so neither an endless
body nor a server trickling its headers or body a byte at a time can fill the disk or hang
the caller. Temporary files left by a process killed with -9 are removed by the next
download into the same folder (see tinycnn/fileutil.py).

Per mirror: connection errors, timeouts, cut-short bodies and 5xx answers are retried a
few times with exponential backoff; a 4xx answer, a checksum mismatch, a redirect loop or a
URL requests cannot fetch (file://, a mistyped mirror) moves on to the next mirror at once
(retrying would get the same answer). Redirects to another host are followed: what arrives
is verified all the same. The body is saved as it comes (no Content-Encoding is undone), so
a server that gzips it cannot make a small answer inflate on the way to disk.
"""
import hashlib
import os
import re
import socket
import sys
import threading
import time

import requests
import urllib3

from ..fileutil import clean_stale_temps, create_temp
from ..checks import whole_number

try:
    from tqdm.auto import tqdm
except ImportError:     # tqdm is a dependency, but a progress bar is not worth a crash
    tqdm = None


DEADLINE_ENV = "TINYCNN_DOWNLOAD_DEADLINE"
DEFAULT_DEADLINE = 1800.0         # seconds per file and mirror: 10 MB at 6 kB/s still fits
UNLIMITED = float("inf")


# Answers that every retry would get again: go to the next mirror at once.
_UNUSABLE_URL = (requests.exceptions.TooManyRedirects, requests.exceptions.InvalidSchema,
                 requests.exceptions.MissingSchema, requests.exceptions.InvalidURL)


class DownloadError(RuntimeError):
    """Every mirror failed; the message lists each one and why."""


class _Retry(Exception):
    """A failure worth trying the same mirror again for."""


class _NextMirror(Exception):
    """A failure the same mirror will repeat: go to the next one."""


class _Watchdog:
    """Shuts every socket of one attempt when its deadline passes. A socket timeout bounds
    one wait for data, not a whole answer: a server that sends its status line and then a
    header byte every half second never trips it, and http.client takes 100 header lines
    of 64 KiB. Shutting the socket ends the blocked read at once (as a closed connection)."""

    def __init__(self, seconds):
        self.fired = False
        self._sockets, self._lock = [], threading.Lock()
        self._timer = threading.Timer(seconds, self._fire) if seconds < UNLIMITED else None

    def watch(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.fired:                # connected just as the deadline passed
                _shut(sock)

    def _fire(self):
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self):
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc):
        if self._timer is not None:
            self._timer.cancel()


def _shut(sock):
    sock = getattr(sock, "socket", sock)      # (urllib3's SSLTransport, HTTPS through an HTTPS proxy, wraps one)
    try:       # (socket.socket's own shutdown: on a TLS socket, the ssl layer's would write to it)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):          # closed already; not a socket after all
        pass


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with every connection it opens (to a mirror, a redirect's target or
    a proxy) handed to `watchdog` once connected."""

    def __init__(self, watchdog):
        self._watchdog = watchdog
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self._watch(self.poolmanager)

    def proxy_manager_for(self, proxy, **kwargs):
        return self._watch(super().proxy_manager_for(proxy, **kwargs))

    def _watch(self, manager):
        # urllib3's documented hooks: a pool manager makes its pools from pool_classes_by_scheme,
        # a pool its connections from ConnectionCls.
        watch = self._watchdog.watch

        def watched(pool_cls):
            class Connection(pool_cls.ConnectionCls):
                def connect(self):
                    super().connect()
                    watch(self.sock)
            return type(pool_cls.__name__, (pool_cls,), {"ConnectionCls": Connection})
        if not getattr(manager, "_tinycnn_watched", False):
            manager.pool_classes_by_scheme = {scheme: watched(cls) for scheme, cls
                                              in manager.pool_classes_by_scheme.items()}
            manager._tinycnn_watched = True
        return manager


def _too_slow(what, started, deadline):
    return _NextMirror(f"too slow: {what} in {time.monotonic() - started:.1f} s, past the "
                       f"{deadline:g} s deadline for one file (deadline=... or {DEADLINE_ENV} sets it)")


def _fetch_once(url, out, name, timeout, progress, max_bytes, deadline, chunk_size=1 << 16):
    """Stream url into the open binary file `out`; return the number of bytes written.

    Bounded in size and time: a Content-Length above max_bytes is refused before the body
    is read, a body that runs past max_bytes is cut there, and the whole transfer, from the
    connection on, must end within `deadline` seconds (a read timeout alone never fires on a
    server that trickles one byte every half second, in the headers or in the body)."""
    started = time.monotonic()
    with _Watchdog(deadline) as watchdog, requests.Session() as session:
        for prefix in ("http://", "https://"):
            session.mount(prefix, _WatchedAdapter(watchdog))
        try:
            received = _transfer(session, url, out, name, timeout, progress, max_bytes, deadline,
                                 started, chunk_size)
        except _Retry:
            if not watchdog.fired:
                raise
        else:
            if not watchdog.fired:
                return received
    # The watchdog shut the socket: the answer seemed cut short (or, with no Content-Length,
    # complete); it was too slow, and another attempt at this mirror would be too.
    got = f"{out.tell():,} bytes" if out.tell() else "no complete answer"
    raise _too_slow(got, started, deadline)


def _transfer(session, url, out, name, timeout, progress, max_bytes, deadline, started, chunk_size):
    """_fetch_once's request and body loop, in `session`."""
    expected, received = None, 0
    # No socket wait may outlast the deadline either (a total silence ends at min(read, deadline)).
    finite = deadline if deadline < UNLIMITED else None
    cap = lambda t: finite if t is None else min(t, deadline)
    timeout = tuple(map(cap, timeout)) if isinstance(timeout, tuple) else cap(timeout)
    try:
        # identity: the body is the file itself, so Content-Length is its size and no
        # Content-Encoding layer can inflate it on the way in.
        with session.get(url, stream=True, timeout=timeout,
                         headers={"Accept-Encoding": "identity"}) as response:
            if 400 <= response.status_code < 500:
                raise _NextMirror(f"HTTP {response.status_code} {response.reason}")
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code} {response.reason}")
            response.raise_for_status()
            expected = response.headers.get("Content-Length")
            if expected is not None:        # "²".isdigit(), and int() of 5000 digits: ValueError
                if not (expected.isascii() and expected.isdigit() and len(expected) <= 18):
                    raise _NextMirror(f"bad Content-Length {expected[:20]!r}; not downloaded")
                expected = int(expected)
            if expected is not None and expected > max_bytes:
                raise _NextMirror(f"Content-Length {expected:,} bytes is more than any copy of "
                                  f"this file can be ({max_bytes:,}); not downloaded")
            bar = None
            if progress and tqdm is not None:
                bar = tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=name, leave=False)
            try:
                while True:
                    # read1 returns what has arrived (up to chunk_size) instead of waiting
                    # for a full chunk, so the deadline is checked at least once per read.
                    chunk = response.raw.read1(chunk_size)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes:
                        raise _NextMirror(f"body goes on past {max_bytes:,} bytes, more than any "
                                          "copy of this file can be; cut off there")
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    if time.monotonic() - started > deadline:
                        raise _too_slow(f"{received:,} bytes", started, deadline)
            finally:
                if bar is not None:
                    bar.close()
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError):
        # the server closed the connection early
        raise _Retry(f"body cut short: {received} of {expected or '?'} bytes") from None
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as err:
        raise _Retry(f"timed out ({type(err).__name__}, timeout={timeout})") from None
    except _UNUSABLE_URL as err:       # a redirect loop, a redirect to file://, a mistyped mirror
        raise _NextMirror(f"{type(err).__name__}: {err}") from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
        raise _Retry(f"{type(err).__name__}: {_root_cause(err)}") from None   # refused, reset, DNS
    if expected is not None and received != expected:
        raise _Retry(f"body cut short: {received} of {expected} bytes")
    return received


def _root_cause(err):
    """The innermost message of a requests/urllib3 exception chain ("[Errno 111] Connection
    refused", "Name or service not known"), not the whole nested repr."""
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    return match.group(0) if match else str(err)


def download_file(urls, dest, verify=None, timeout=(10, 60), retries=3, backoff=1.0,
                  progress=None, max_bytes=None, deadline=None):
    """Download the first good copy among `urls` (a list of mirrors' URLs, or one URL) to
    `dest`; return dest.

    verify(path) -> None or a string saying what is wrong with the downloaded file (e.g. a
    checksum mismatch); a complaint moves on to the next mirror.
    timeout: (connect, read) seconds; retries: attempts per mirror (>= 1); backoff: seconds
    before the first retry, doubling after each.
    max_bytes: the most the file can be (default: no limit); a larger Content-Length is
    refused unread, a longer body is cut off. Either moves on to the next mirror.
    deadline: seconds one attempt at one mirror may take in all (default: $TINYCNN_DOWNLOAD_DEADLINE,
    else 1800); a mirror that overruns it is left for the next.
    progress: show a progress bar (default: when stderr is a terminal).
    Stale temporary files of killed downloads in dest's folder are removed first.
    """
    if isinstance(urls, (str, bytes)):      # one URL, not a list of one-letter "mirrors"
        urls = [urls]
    whole_number(retries, 1, "download_file", "retries", " of attempts per mirror,")
    if progress is None:
        progress = sys.stderr.isatty()
    max_bytes = UNLIMITED if max_bytes is None else max_bytes
    deadline = _default_deadline() if deadline is None else float(deadline)
    dest = os.fspath(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    clean_stale_temps(folder)
    failures = []
    for url in urls:
        for attempt in range(1, retries + 1):
            fd, tmp = create_temp(dest, ".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    _fetch_once(url, out, os.path.basename(dest), timeout, progress, max_bytes, deadline)
                problem = verify(tmp) if verify is not None else None
                if problem:
                    raise _NextMirror(problem)
                os.replace(tmp, dest)
                return dest
            except _Retry as err:
                reason = str(err)
                if attempt < retries:
                    wait = backoff * 2 ** (attempt - 1)
                    if progress:               # (seconds of silence otherwise, offline)
                        print(f"tinycnn: {url}: {reason}; trying again in {wait:g} s "
                              f"(attempt {attempt + 1} of {retries})", file=sys.stderr, flush=True)
                    time.sleep(wait)
                    continue
                failures.append((url, f"{reason} (after {retries} attempt{'s' * (retries != 1)})"))
            except _NextMirror as err:
                failures.append((url, str(err)))
                break
            finally:          # reached on success too, when tmp no longer exists
                if os.path.exists(tmp):
                    os.remove(tmp)
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures) or "  (no mirrors given)"
    raise DownloadError(f"could not download {os.path.basename(dest)}; every mirror failed:\n"
                        f"{lines}")


def _default_deadline():
    value = os.environ.get(DEADLINE_ENV)
    if not value:
        return DEFAULT_DEADLINE
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{DEADLINE_ENV}={value!r}: expected a number of seconds above 0")
    return seconds


def sha256_of(path_or_bytes):
    """Hex SHA-256 of a file (read in chunks) or of a bytes object."""
    h = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        h.update(path_or_bytes)
        return h.hexdigest()
    with open(path_or_bytes, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
