"""Consumer processes of the document bus: a Python module run as its own interpreter, framed messages on its pipes.

Why its own interpreter (issue 12): the storage writer and the live analysis used to start through
``multiprocessing`` ("forkserver"/"spawn"), which re-imports the user's ``__main__`` in the child. A script without
an ``if __name__ == "__main__":`` guard (or code piped to ``python -``) then ran its body again in every child:
three sessions, data only in the spool, no derived run. A consumer here is started with ``subprocess.Popen`` as
``python -c BOOT <module>`` (``BOOT`` ignores SIGINT/SIGHUP, takes the parent's ``sys.path`` and runs the module
with ``runpy`` as ``__main__``), like ``python -m <module>``: the user's ``__main__`` is never imported, so a session
works the same from a guarded script, an unguarded one, ``python -``, IPython and Jupyter. The parent's ``sys.path``
(passed in ``$HOTSTAGE_CONSUMER_SYS_PATH``, JSON) lets the child unpickle classes of any module the parent can
import (an analyser in a module next to the user's script, or in a test module), as multiprocessing's spawn did.

Channel: the parent writes frames to the child's stdin, the child writes frames to its stdout (its real stdout is
moved to stderr first, so a stray ``print`` cannot corrupt the stream). A frame is a 4-byte big-endian length
followed by a pickle (protocol 5: numpy arrays travel as raw bytes). The first frame the parent sends is the
child's start-up argument (picklable by reference: classes must live in an importable module, never in
``__main__``). Each side reads its pipe in a thread of its own, and the parent also writes from a thread of its own
(``send`` only queues), so the parent never blocks on a full pipe — not even while the child is still importing
(seconds, minutes on a loaded machine) and reads nothing yet: the writer's courier must keep spooling meanwhile.
If the parent dies, the child's stdin ends (EOF): the child treats that as "close".

This module is stdlib only, at the lowest layer both users may import: the writer
(``hotstage.acquisition.storage``) and the live analysis (``hotstage.analysis.live.callback``; ``analysis/`` must not
import ``acquisition/``). It sits directly in ``analysis/`` (whose ``__init__`` imports nothing), not in
``analysis/live/``, whose ``__init__`` loads the fitting stack: the writer process would pay those imports (seconds)
at every start.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

__all__ = ["BOOT", "SYS_PATH_ENV", "ConsumerProcess", "ParentChannel", "read_frame", "write_frame"]

_LENGTH = struct.Struct(">I")
MAX_FRAME = 2**32 - 1
_EOF = object()
_CLOSE = object()

SYS_PATH_ENV = "HOTSTAGE_CONSUMER_SYS_PATH"
BOOT = (
    "import json, os, runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"  # Ctrl-C reaches the whole process group: the parent decides
    "if hasattr(signal, 'SIGHUP'): signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"  # a closed terminal: likewise
    f"sys.path[:] = json.loads(os.environ.pop({SYS_PATH_ENV!r}, 'null')) or sys.path\n"
    "runpy.run_module(sys.argv[1], run_name='__main__', alter_sys=True)\n"
)
"""The child's first lines (``python -c BOOT module``): signals the parent handles, then the module as __main__."""


def write_frame(stream: BinaryIO, obj: Any) -> None:
    """Write one object as a frame (length + pickle) and flush."""
    data = pickle.dumps(obj, protocol=5)
    if len(data) > MAX_FRAME:
        raise ValueError(f"frame of {len(data)} bytes is too large")
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """Read one frame; ``EOFError`` when the stream ended (also in the middle of a frame)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("channel closed")
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("channel closed in the middle of a frame")
    return pickle.loads(data)


class ConsumerProcess:
    """Parent's handle of one consumer process: start, send, receive, watch, stop.

    ``send`` queues a message for a writer thread (never blocks) and raises ``BrokenPipeError`` once a write found
    the child gone (what was queued for a dead child is dropped: its owner holds what it must re-send); ``recv``/
    ``poll`` read what a reader thread already took off the child's stdout (``EOFError`` once it closed).
    ``exitcode`` follows ``multiprocessing``: None while running, negative for a signal.
    """

    def __init__(self, module: str, init: Any, *, name: str, env: dict[str, str] | None = None) -> None:
        """Start ``python -c BOOT module`` and send ``init`` as its first frame."""
        self.module = module
        self.name = name
        env = dict(os.environ if env is None else env)
        env[SYS_PATH_ENV] = json.dumps([p for p in sys.path if isinstance(p, str)])
        self._proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            close_fds=True, env=env,
        )
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._eof = False
        self._broken = False
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._writer = threading.Thread(target=self._write, name=f"{name}-writer", daemon=True)
        self._reader.start()
        self._writer.start()
        self.send(init)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    @property
    def exitcode(self) -> int | None:
        """None while it runs, else its exit status (negative: killed by that signal)."""
        return self._proc.poll()

    def is_alive(self) -> bool:
        """True while the child runs."""
        return self._proc.poll() is None

    def send(self, obj: Any) -> None:
        """Queue one message for the child (in order, also from several threads); never waits for the pipe."""
        if self._broken:
            raise BrokenPipeError(f"consumer process {self.pid} closed its input")
        self._outbox.put(obj)

    def close_input(self) -> None:
        """Close the child's stdin once what is queued is written: it reads EOF (its signal to finish)."""
        self._outbox.put(_CLOSE)

    def _write(self) -> None:
        """Writer thread: queued messages as frames on the child's stdin, then close it."""
        stdin = self._proc.stdin
        assert stdin is not None
        while True:
            obj = self._outbox.get()
            if obj is _CLOSE:
                break
            if self._broken:
                continue  # the child is gone: drop (its owner re-sends what matters to a new one)
            try:
                write_frame(stdin, obj)
            except (OSError, ValueError):  # BrokenPipeError; ValueError: the pipe was closed under us
                self._broken = True
        try:
            stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        """Reader thread: frames from the child's stdout into the inbox, then an end marker."""
        assert self._proc.stdout is not None
        try:
            while True:
                self._inbox.put(read_frame(self._proc.stdout))
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        finally:
            self._inbox.put(_EOF)

    def poll(self) -> bool:
        """True if a message (or the end) can be received without waiting."""
        return self._eof or not self._inbox.empty()

    def recv(self, timeout: float | None = None) -> Any:
        """The next message; ``EOFError`` once the child closed its stdout; ``queue.Empty`` on timeout."""
        if self._eof:
            raise EOFError("consumer process closed its channel")
        msg = self._inbox.get(timeout=timeout)
        if msg is _EOF:
            self._eof = True
            raise EOFError("consumer process closed its channel")
        return msg

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to exit (at most ``timeout`` s)."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def terminate(self) -> None:
        """SIGTERM the child (if it still runs)."""
        if self.is_alive():
            self._proc.terminate()

    def kill(self) -> None:
        """SIGKILL the child (if it still runs)."""
        if self.is_alive():
            self._proc.kill()

    def stop(self, timeout: float = 5.0) -> None:
        """Close its input, wait, then terminate and kill if needed; release the pipes."""
        self.close_input()
        self.join(timeout)
        for step in (self.terminate, self.kill):
            if not self.is_alive():
                break
            step()
            self.join(2.0)
        self._writer.join(1.0)  # a write blocked on the dead child's pipe has failed by now
        self._reader.join(1.0)
        if self._proc.stdout is not None and not self._reader.is_alive():
            self._proc.stdout.close()


def exit_done() -> None:
    """End a consumer process whose work is stored and sent: flush stdio, then skip the interpreter's teardown
    (of tiled, dask, xarray: ~1 s the parent's close() would wait for) with exit status 0."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class ParentChannel:
    """The child's end: frames from the parent on the original stdin, frames to it on the original stdout.

    Creating it moves the real stdout to stderr (fd 1 becomes a copy of fd 2) and stdin to /dev/null, so nothing
    else in the child can read or write the channel.
    """

    def __init__(self) -> None:
        """Take fds 0 and 1 for the channel."""
        in_fd, out_fd = os.dup(0), os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._in = os.fdopen(in_fd, "rb")
        self._out = os.fdopen(out_fd, "wb")
        self._lock = threading.Lock()

    def recv(self) -> Any:
        """The next message from the parent; ``EOFError`` when the parent closed the pipe (or died)."""
        return read_frame(self._in)

    def send(self, obj: Any) -> None:
        """Send one message to the parent (``BrokenPipeError`` if it is gone)."""
        with self._lock:
            write_frame(self._out, obj)

    def close(self) -> None:
        """Close the parent-bound pipe (the parent's reader sees the end)."""
        with self._lock:
            try:
                self._out.close()
            except OSError:
                pass
