"""Writing files so that a crash never leaves a broken one, and tidying up after crashes
that happened anyway.

Every file tinycnn writes (a saved model, a downloaded dataset file) is first written under a
hidden temporary name in the destination folder, then renamed into place:

    .<name>.tinycnn-<host>-<pid>-<random>.tmp      (atomic_write)
    .<name>.tinycnn-<host>-<pid>-<random>.part     (downloads)

A process killed with -9 cannot remove its temporary file, so the next write into the same
folder removes the ones whose writer is dead (clean_stale_temps). The writer's host and PID
are in the name because they answer "is its writer still running?" exactly: a rule based
on age would either delete the file of a slow download still in progress or keep a dead
one for hours. Files of another host (a folder shared over the network) are left alone,
since their PID means nothing here; so is any name tinycnn did not make.
"""
import contextlib
import errno
import os
import re
import secrets
import socket
import stat

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TEMP_NAME = re.compile(r"^\..+\.tinycnn-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}\.(tmp|part)$")


def create_temp(path, suffix):
    """Create and open a new temporary file beside `path`; return (fd, temp path).

    The file is created with mode 0666 minus the umask (os.open applies it, as for any
    new file), so the renamed result has the permissions the user's umask asks for;
    tempfile.mkstemp would give 0600 whatever the umask."""
    folder = os.path.dirname(os.path.abspath(path))
    # The name is cut to 128 bytes here, so that a final name near the file system's limit
    # (255 bytes) does not make a temporary one beyond it (ours adds up to 64 bytes).
    prefix = f".{fit_name(os.path.basename(path), 128)}.tinycnn-{_HOST}-{os.getpid()}-"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, prefix + secrets.token_hex(4) + suffix)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:          # 1 in 4 billion: draw another name
            continue


def fit_name(name, limit):
    """`name` cut to at most `limit` bytes in the file system's encoding (whole characters:
    file names are limited in bytes, and one character may take four)."""
    while name and len(os.fsencode(name)) > limit:
        name = name[:-max(1, (len(os.fsencode(name)) - limit) // 4)]
    return name


def name_max(folder):
    """The longest file name, in bytes, that `folder`'s file system takes (255, the common
    limit, where it cannot tell). A folder not made yet: its nearest existing parent's."""
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):      # (no pathconf on Windows)
        return 255


def check_writable(folder):
    """Create and remove a new file in `folder` (a temporary name, never one of the user's);
    the OSError this raises is why nothing can be written there. A real write rather than
    os.access(W_OK): root passes that check on any folder, yet cannot write in /sys."""
    fd, probe = create_temp(os.path.join(folder, "write-test"), ".tmp")
    os.close(fd)
    os.remove(probe)


def process_alive(pid):
    """Whether process `pid` exists on this machine (POSIX; elsewhere we cannot tell cheaply
    and safely, so every writer counts as alive and nothing is cleaned)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)                  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:              # exists, belongs to someone else
        return True
    return True


def clean_stale_temps(folder):
    """Remove tinycnn's temporary files in `folder` whose writing process (on this host) is
    dead; return the names removed. Anything else in the folder is never touched."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:                      # no folder yet, or not readable: nothing to clean
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if not match or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or process_alive(pid):
            continue
        path = os.path.join(folder, name)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):     # our files are regular, never links
                os.remove(path)
                removed.append(name)
        except OSError:                  # removed meanwhile by another process, or read-only
            pass
    return removed


@contextlib.contextmanager
def atomic_write(path, verify=None):
    """Yield a binary file object; on a clean exit it is renamed to `path` (os.replace is
    atomic on one filesystem), on any exception or Ctrl-C it is deleted and `path` is left
    as it was. verify(temporary path), if given, reads the finished file back first and
    raises to refuse it. The new file's mode follows the umask. Stale temporary files of
    dead processes in the same folder are removed first.

        with atomic_write("model.npz") as f:
            np.savez(f, **arrays)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    clean_stale_temps(folder)
    try:
        fd, tmp = create_temp(path, ".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except OSError as err:               # (a full disk, `path` a folder, ...)
        raise _naming(err, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _naming(err, path):
    """The same error, naming the file the user asked for rather than our temporary one."""
    return type(err)(err.errno, err.strerror, path) if err.errno else err


def describe_non_file(path):
    """What `path` is when it exists but is not a regular file one can read: "a folder",
    "a symbolic link loop", "a dangling symbolic link", "a FIFO (named pipe)", ...;
    None when it is a regular file (through any symlinks) or does not exist at all."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if not os.path.islink(path):
            return None                  # nothing there (or an unreadable parent: not ours to name)
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"a dangling symbolic link (to {os.readlink(path)})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"
