"""Writing files so that a crash never leaves a broken one."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file object; on a clean exit it is renamed to `path` (os.replace is
    atomic on one filesystem), on any exception or Ctrl-C it is deleted and `path` is left
    as it was.

        with atomic_write("model.npz") as f:
            np.savez(f, **arrays)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
