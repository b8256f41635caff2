"""The bound every hostile-input case is held to (issue #17), shared by the two corpora."""
import time
import tracemalloc
from contextlib import contextmanager

SECONDS, MEGABYTES = 2.0, 300      # each case: under 2 s and 300 MB over its baseline


@contextmanager
def traced(record):
    """Time and peak traced Python/NumPy memory of the block: record(seconds, megabytes),
    then assert both are under the bound."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - t0
        megabytes = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        record(seconds, megabytes)
    assert seconds < SECONDS and megabytes < MEGABYTES, (seconds, megabytes)
