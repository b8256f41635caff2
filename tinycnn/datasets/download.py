"""Downloading one file from a list of mirrors, safely.

The file is streamed into a temporary file beside its destination, checked, and only then
renamed into place (os.replace is atomic on one filesystem). So:
- a crash, Ctrl-C or a failed check never leaves a partial file under the final name, and
  the temporary file is removed on the way out;
- two processes downloading the same file at once each write their own temporary file;
  whichever renames last wins, and both candidates were verified, so the result is whole.

Per mirror: connection errors, timeouts, cut-short bodies and 5xx answers are retried a
few times with exponential backoff; a 4xx answer or a checksum mismatch moves on to the
next mirror at once (retrying would get the same answer).
"""
import hashlib
import os
import re
import sys
import tempfile
import time

import requests

try:
    from tqdm.auto import tqdm
except ImportError:     # tqdm is a dependency, but a progress bar is not worth a crash
    tqdm = None


class DownloadError(RuntimeError):
    """Every mirror failed; the message lists each one and why."""


class _Retry(Exception):
    """A failure worth trying the same mirror again for."""


class _NextMirror(Exception):
    """A failure the same mirror will repeat: go to the next one."""


def _fetch_once(url, tmp_path, timeout, progress, chunk_size=1 << 16):
    """Stream url into tmp_path; return the number of bytes written."""
    expected, received = None, 0
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if 400 <= response.status_code < 500:
                raise _NextMirror(f"HTTP {response.status_code} {response.reason}")
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code} {response.reason}")
            response.raise_for_status()
            expected = response.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            bar = None
            if progress and tqdm is not None:
                bar = tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=os.path.basename(tmp_path).split(".part")[0].lstrip("."),
                           leave=False)
            try:
                with open(tmp_path, "wb") as out:
                    for chunk in response.iter_content(chunk_size):
                        out.write(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except requests.exceptions.ChunkedEncodingError:      # the server closed the connection early
        raise _Retry(f"body cut short: {received} of {expected or '?'} bytes") from None
    except requests.exceptions.Timeout as err:
        raise _Retry(f"timed out ({type(err).__name__}, timeout={timeout})") from None
    except requests.exceptions.RequestException as err:   # refused, reset, DNS, ...
        raise _Retry(f"{type(err).__name__}: {_root_cause(err)}") from None
    if expected is not None and received != expected:
        raise _Retry(f"body cut short: {received} of {expected} bytes")
    return received


def _root_cause(err):
    """The innermost message of a requests/urllib3 exception chain ("[Errno 111] Connection
    refused", "Name or service not known"), not the whole nested repr."""
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    return match.group(0) if match else str(err)


def download_file(urls, dest, verify=None, timeout=(10, 60), retries=3, backoff=1.0,
                  progress=None):
    """Download the first good copy among `urls` to `dest`; return dest.

    verify(path) -> None or a string saying what is wrong with the downloaded file (e.g. a
    checksum mismatch); a complaint moves on to the next mirror.
    timeout: (connect, read) seconds; retries: attempts per mirror; backoff: seconds
    before the first retry, doubling after each.
    progress: show a progress bar (default: when stderr is a terminal).
    """
    if progress is None:
        progress = sys.stderr.isatty()
    dest = os.fspath(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    failures = []
    for url in urls:
        for attempt in range(1, retries + 1):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(dest) + ".",
                                       suffix=".part")
            os.close(fd)
            try:
                _fetch_once(url, tmp, timeout, progress)
                problem = verify(tmp) if verify is not None else None
                if problem:
                    raise _NextMirror(problem)
                os.replace(tmp, dest)
                return dest
            except _Retry as err:
                reason = str(err)
                if attempt < retries:
                    time.sleep(backoff * 2 ** (attempt - 1))
                    continue
                failures.append((url, f"{reason} (after {retries} attempts)"))
            except _NextMirror as err:
                failures.append((url, str(err)))
                break
            finally:          # reached on success too, when tmp no longer exists
                if os.path.exists(tmp):
                    os.remove(tmp)
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures) or "  (no mirrors given)"
    raise DownloadError(f"could not download {os.path.basename(dest)}; every mirror failed:\n"
                        f"{lines}")


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
