"""The environment variables tinycnn reads, checked in one place.

    TINYCNN_BACKEND             numba, numpy or loops (backend.py)
    TINYCNN_WINOGRAD            on/off switches: 1, true, yes, on or 0, false, no, off
    TINYCNN_BLOCKED               (anything else is an error: "TINYCNN_WINOGRAD=false" once
    TINYCNN_KEEP_MEMORY           meant "on", silently)
    TINYCNN_BACKGROUND_COMPILE
    NUMBA_NUM_THREADS           Numba's own: a whole number from 1 to MAX_NUMBA_THREADS

`check_at_import()` runs first thing in tinycnn/__init__.py, before Numba is imported:
Numba fails with a bare "Number of threads specified must be > 0." at its import when
NUMBA_NUM_THREADS=0, and crashed with a segmentation fault at 100000. A bad value is a
ValueError naming the variable; when the process is the `tinycnn` command itself
(`tinycnn ...` or `python -m tinycnn ...`), whose own error handling cannot run before the
package is imported, it is one line on stderr and exit status 2 instead of a traceback.
"""
import os
import sys

BACKENDS = ("numba", "numpy", "loops")
FLAGS = {"TINYCNN_WINOGRAD": True, "TINYCNN_BLOCKED": True, "TINYCNN_KEEP_MEMORY": True,
         "TINYCNN_BACKGROUND_COMPILE": True}
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
MAX_NUMBA_THREADS = 4096           # ran here; 100000 crashed Numba (segmentation fault)


class EnvironmentVariableError(ValueError):
    """An environment variable tinycnn reads holds a value it cannot use; the message names it."""


def _value(name):
    return os.environ.get(name, "").strip().lower()


def flag(name):
    """The on/off switch `name` (one of FLAGS): its default when unset or empty."""
    value = _value(name)
    if not value:
        return FLAGS[name]
    if value in _ON or value in _OFF:
        return value in _ON
    raise EnvironmentVariableError(f"{name}={os.environ[name]!r}: expected one of "
                                   f"{', '.join(_ON)} (on) or {', '.join(_OFF)} (off)")


def backend():
    """The kernel set TINYCNN_BACKEND asks for ("numba" when unset or empty)."""
    value = _value("TINYCNN_BACKEND") or "numba"
    if value not in BACKENDS:
        raise EnvironmentVariableError(f"TINYCNN_BACKEND={os.environ['TINYCNN_BACKEND']!r} is not a "
                                       f"backend; choose one of {', '.join(BACKENDS)}")
    return value


def _numba_threads():
    value = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if value and not (value.isdigit() and 1 <= int(value) <= MAX_NUMBA_THREADS):
        raise EnvironmentVariableError(f"NUMBA_NUM_THREADS={value!r}: Numba's thread count must be a "
                                       f"whole number from 1 to {MAX_NUMBA_THREADS}; unset it to use "
                                       "every core")


def problems():
    """What is wrong with tinycnn's environment variables, one sentence each (empty if nothing)."""
    found = []
    for check in [backend, _numba_threads] + [lambda n=n: flag(n) for n in FLAGS]:
        try:
            check()
        except EnvironmentVariableError as err:
            found.append(str(err))
    return found


def _is_tinycnn_command():
    """Whether this process is `tinycnn ...` or `python -m tinycnn ...` (sys.orig_argv holds
    the interpreter's own options, so `-m tinycnn` is visible while the package imports)."""
    if sys.argv and os.path.basename(sys.argv[0]) == "tinycnn":
        return True
    options = iter(getattr(sys, "orig_argv", [])[1:])
    for option in options:               # the interpreter's own options, up to the first -m
        if option == "-m":
            return next(options, "").split(".")[0] == "tinycnn"
        if option in ("-W", "-X"):       # options that take a value
            next(options, None)
        elif not option.startswith("-") or option == "-c":     # a script or -c: not us
            return False
    return False


def check_at_import():
    """Raise EnvironmentVariableError (or, in the tinycnn command, exit with one line) when
    any variable above holds a value tinycnn cannot use."""
    found = problems()
    if not found:
        return
    if _is_tinycnn_command():
        print(f"tinycnn: error: {'; '.join(found)}", file=sys.stderr)
        raise SystemExit(2)
    raise EnvironmentVariableError("; ".join(found))
