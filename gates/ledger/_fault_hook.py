"""Fault hook injected into the product for kill checks (loaded as its ``sitecustomize``).

Never imported by the checks themselves: ``conftest`` reads this file's text at collection time
(the gates directory is erased afterwards) and writes it as ``sitecustomize.py`` into a
directory put first on the product's ``PYTHONPATH``, so Python loads it before the product.

It numbers the product's *state-changing steps*, in the order they happen:

- ``open:NAME`` / ``append:NAME``: a file opened for writing / for appending only (before the
  open; ``NAME`` is the base name), from the ``open`` audit event (``open()``, ``io.open``,
  ``os.open``, pathlib);
- ``rename:SRC>DST``, ``truncate:NAME``, ``remove:NAME``, ``mkdir:NAME``: the matching ``os``
  audit events (``os.replace`` raises ``os.rename``);
- ``write``, ``writelines``, ``flush``, ``fsync``, ``fdatasync``, ``ftruncate``, ``print``:
  calls of those built-in functions or methods (profiling hook, ``c_call``), before the call.

Environment (removed from ``os.environ`` so the product never sees it):

- ``MARATHON_FAULT_KILL_AT=N``: SIGKILL the process just before step N (1-based): the state
  on disk is then what a ``kill -9`` at that instant leaves (Python's unflushed buffers lost);
- ``MARATHON_FAULT_TRACE=PATH``: at a normal exit, write the labels of every step, one per
  line, to PATH (how many steps a run has and what they are, to choose kill points).

Only standard library; the hook's own file writes are not counted.
"""

import os
import sys

_KILL_AT = int(os.environ.pop("MARATHON_FAULT_KILL_AT", "0") or 0)
_TRACE = os.environ.pop("MARATHON_FAULT_TRACE", "")
_CALLS = frozenset(("write", "writelines", "flush", "fsync", "fdatasync", "ftruncate", "print"))
_OS_EVENTS = {"os.rename": "rename", "os.truncate": "truncate", "os.remove": "remove",
              "os.mkdir": "mkdir", "os.rmdir": "remove"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_state = {"n": 0, "busy": False}
_labels = []


def _name(path):
    try:
        return os.path.basename(os.fsdecode(path)) if not isinstance(path, int) else f"fd{path}"
    except (TypeError, ValueError):
        return "?"


def _step(label):
    if _state["busy"]:
        return
    _state["n"] += 1
    if _TRACE:
        _labels.append(label)
    if _state["n"] == _KILL_AT:
        _state["busy"] = True
        os.kill(os.getpid(), 9)


def _audit(event, args):
    if _state["busy"]:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(mode, str):
            writing, appending = any(char in mode for char in "wax+"), "a" in mode
        else:
            writing = isinstance(flags, int) and flags >= 0 and bool(flags & _WRITE_FLAGS)
            appending = writing and bool(flags & os.O_APPEND) and not flags & os.O_TRUNC
        if writing and not isinstance(path, int):
            _step(f"{'append' if appending else 'open'}:{_name(path)}")
    elif event in _OS_EVENTS:
        label = f"{_OS_EVENTS[event]}:{_name(args[0])}"
        if event == "os.rename":
            label += f">{_name(args[1])}"
        _step(label)


def _profile(frame, event, arg):
    if event == "c_call":
        name = getattr(arg, "__name__", "")
        if name in _CALLS:
            _step(name)


def _dump():
    _state["busy"] = True
    try:
        fd = os.open(_TRACE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, "".join(label + "\n" for label in _labels).encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


if _KILL_AT or _TRACE:
    import atexit
    import threading

    if _TRACE:
        atexit.register(_dump)
    sys.addaudithook(_audit)
    sys.setprofile(_profile)
    threading.setprofile(_profile)
