"""How a `hotstage run`/`demo` process ends: SIGINT, SIGTERM and SIGHUP take one safe way out, with one line.

Ctrl-C (SIGINT), SIGTERM (``kill``, ``timeout``, ``systemctl stop``, a batch scheduler) and SIGHUP (the terminal
or SSH session closed) all do the same thing, depending on where the process is when the signal arrives:

* while a plan runs (inside ``RunEngine.__call__``): the run is *aborted* at once with a readable reason
  (``RE.abort(reason)`` from a helper thread, as bluesky's own SIGINT handler requests its pause): the plan's final
  plan switches the heater off and confirms it by read-back, the stop document (``exit_status`` "abort") is
  emitted and stored, and the live analysis ends the derived run the same way. `ExitSignals.run_engine_guard`
  replaces bluesky's ``SigintHandler`` in ``RE.context_managers`` (a pause would leave the run open and a second
  Ctrl-C would be a halt, which skips the final plan).
* while the session opens or closes, or a run's documents are being drained (`ExitSignals.shielded`): nothing is
  interrupted half-way; the signal is remembered and raised as `Interrupted` at the next `checkpoint()` (the
  session places them between its steps), so storage is flushed and the furnace made safe first.
* anywhere else in the command (validation, the summary): `Interrupted` is raised at once, like KeyboardInterrupt.

Any later signal never interrupts the shutdown: it prints one line (``hotstage: SIGINT again: still …``) and
the shutdown goes on. `Interrupted` subclasses KeyboardInterrupt (``except Exception`` does not swallow it) and
carries the exit status the shell expects, 128 + the signal number: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP).

The command then prints one line (`interrupted_line`) that says only what is known to be true: whether the heater
was confirmed off by read-back and whether every document reached the catalog (`CatalogWriter.close`'s result).

`configure_logging` gives the command's log records one line each on stderr (no tracebacks; ``HOTSTAGE_DEBUG=1``
shows them), and `say` writes a line that never raises (the terminal may be gone after a SIGHUP; a closed pipe
must not end in a BrokenPipeError traceback).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

__all__ = ["Interrupted", "ExitSignals", "EXIT_SIGNALS", "exit_status", "configure_logging", "say",
           "interrupted_line", "quiet_streams", "DEBUG_ENV"]

log = logging.getLogger(__name__)

EXIT_SIGNALS: tuple[int, ...] = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None
)
"""The signals that end a session safely (SIGHUP does not exist on Windows)."""
DEBUG_ENV = "HOTSTAGE_DEBUG"
"""Set to 1 to see full tracebacks in the command's log lines and errors."""
_ABORT_STATES = ("running", "suspending", "pausing")
"""RunEngine states in which an abort is requested (aborting/stopping/halting: it is already ending the run)."""
_REASONS = {
    "SIGINT": "interrupted by the user (Ctrl-C, SIGINT)",
    "SIGTERM": "SIGTERM received (the process was asked to stop: kill, timeout, systemctl stop or a batch scheduler)",
    "SIGHUP": "SIGHUP received (the terminal or SSH session was closed)",
}


def exit_status(signum: int) -> int:
    """The shell's exit status for a process ended by `signum`: 128 + its number (130, 143, 129)."""
    return 128 + int(signum)


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """A session-ending signal arrived: `signum`, its `name`, the run's stop `reason` and the `exit_code`."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = _name(signum)
        self.reason = _REASONS.get(self.name, f"{self.name} received")
        self.exit_code = exit_status(signum)
        super().__init__(self.reason)


class ExitSignals:
    """Handlers for SIGINT, SIGTERM and SIGHUP while a command runs a session (module docstring).

    Use as a context manager in the main thread (handlers installed on enter, the previous ones restored on exit);
    give it to `hotstage.acquisition.session.Session(signals=...)`, which shields its opening and closing and puts
    `run_engine_guard` on its RunEngine."""

    def __init__(self, signals: tuple[int, ...] = EXIT_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: list[int] = []
        """Every signal received, in order."""
        self.raised = False
        """True once `Interrupted` was raised for the first signal (the later ones only print a line)."""
        self.aborted: list[str] = []
        """Reasons of the runs aborted because of a signal."""
        self._previous: dict[int, Any] = {}
        self._shield = 0
        self._guard: _AbortOnSignal | None = None

    # -- installation ----------------------------------------------------------------------------------
    def __enter__(self) -> ExitSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may handle signals: elsewhere the process keeps its handling
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    # -- state -----------------------------------------------------------------------------------------
    @property
    def first(self) -> Interrupted | None:
        """The first signal received, as an `Interrupted` (None: no signal)."""
        return Interrupted(self.received[0]) if self.received else None

    @property
    def pending(self) -> bool:
        """A signal was received and `Interrupted` not raised yet."""
        return bool(self.received) and not self.raised

    def checkpoint(self) -> None:
        """Raise `Interrupted` for the first signal if it is still pending (a point where stopping is clean)."""
        if not self.pending:  # main thread only, like the handler: no lock (a handler could not take it)
            return
        self.raised = True
        raise Interrupted(self.received[0])

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Within: signals are remembered, never raised (opening, draining, closing); `checkpoint()` raises them."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1

    def run_engine_guard(self, RE: Any) -> _AbortOnSignal:
        """A ``RE.context_managers`` entry: while the RunEngine runs a plan, a signal aborts the run."""
        return _AbortOnSignal(self, RE)

    # -- the handler (main thread, between two bytecodes: quick, no print()) ---------------------------
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(int(signum))
        first = len(self.received) == 1
        name = _name(signum)
        if not first:
            say(f"hotstage: {name} again: still switching the furnace off and storing the run; please wait",
                raw=True)
            return
        guard = self._guard
        if guard is not None:
            guard.wake()
            return
        if self._shield:
            return  # raised at the next checkpoint, once the step under way is complete
        self.checkpoint()


class _AbortOnSignal:
    """While a RunEngine runs: a helper thread turns the first signal into ``RE.abort(reason)``."""

    def __init__(self, signals: ExitSignals, RE: Any) -> None:
        self.signals = signals
        self.RE = RE
        self._wake = threading.Event()
        self._released = False
        self._thread = threading.Thread(target=self._watch, name="hotstage-exit-signals", daemon=True)

    def wake(self) -> None:
        """Called by the signal handler: abort the run (from the helper thread)."""
        self._wake.set()

    def __enter__(self) -> _AbortOnSignal:
        self.signals._guard = self
        self._thread.start()
        if self.signals.pending:  # arrived between two plans of the same session
            self._wake.set()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.signals._guard = None
        self._released = True
        self._wake.set()
        self._thread.join(5.0)

    def _watch(self) -> None:
        self._wake.wait()
        while not self._released:
            state = str(self.RE.state)
            if state in _ABORT_STATES:
                if self._abort():
                    return
            elif state not in ("idle", "panicked"):
                return  # paused (the session aborts it), or already aborting/stopping/halting: it is ending
            time.sleep(0.02)  # idle: the plan has not started yet (or just ended: the session raises the signal)

    def _abort(self) -> bool:
        first = self.signals.first
        reason = first.reason if first is not None else "interrupted"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # bluesky prints "Aborting: running cleanup ..."
                self.RE.abort(reason=reason)
        except Exception as exc:  # noqa: BLE001 - TransitionError: it changed state meanwhile; look again
            log.debug("abort on %s not taken yet: %s", reason, exc)
            return False
        self.signals.aborted.append(reason)
        log.info("run aborted: %s", reason)
        return True


# -- output ------------------------------------------------------------------------------------------------
def say(line: str, *, raw: bool = False) -> None:
    """Write one line to stderr; never raises (a closed terminal or pipe). `raw`: unbuffered (signal handlers)."""
    try:
        if raw:
            os.write(2, (line + "\n").encode(errors="replace"))
        else:
            print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def quiet_streams() -> None:
    """Flush stdout and stderr; a stream that cannot be written any more (broken pipe, hung-up terminal) is pointed
    at /dev/null, so that the interpreter's own flush at exit prints no BrokenPipeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass


def interrupted_line(signal_: Interrupted, *, started: bool, heater_off: bool | None, stored: bool | None,
                     run_uid: str | None = None, exit_status_: str | None = None) -> str:
    """The one line a command prints when a signal ended it: only what is known to be true.

    `started`: the session was opened (the rig at least); `heater_off`: True when confirmed by read-back, False when
    it could not be, None when the rig was never opened; `stored`: the catalog writer's close result (None: no
    writer)."""
    head = "interrupted" if signal_.name == "SIGINT" else f"{signal_.name} received"
    if not started:
        return f"hotstage: {head}; nothing was started and no run was recorded"
    parts = []
    if heater_off is True:
        parts.append("the furnace heater was switched off")
    elif heater_off is False:
        parts.append("the furnace heater could NOT be confirmed off (see the warning above)")
    if run_uid is None:
        parts.append("no run was recorded")
    elif stored:
        parts.append("the run was stored")
    else:
        parts.append("not every document reached the catalog: they are kept in the spool "
                     "(run `hotstage spool flush`)")
    line = f"hotstage: {head}; " + " and ".join(parts)
    if run_uid is not None:
        line += f" (run {run_uid}: {exit_status_ or 'no stop document'})"
    return line


# -- logging -----------------------------------------------------------------------------------------------
class _OneLineFormatter(logging.Formatter):
    """``%(message)s``; an exception adds ``: Type: message`` on the same line (the traceback only in debug)."""

    def __init__(self, debug: bool) -> None:
        super().__init__("%(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if self.debug or not record.exc_info:
            return super().format(record)
        exc = record.exc_info[1]
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        if exc is not None:
            detail = " ".join(str(exc).split())
            text += f": {type(exc).__name__}" + (f": {detail}" if detail else "")
        return text


class _DropRunEngineNoise(logging.Filter):
    """The RunEngine logs every abort as an exception ("Run aborted"); the command says how the run ended itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("bluesky") and record.getMessage() == "Run aborted")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record (pytest swaps it between calls of main())."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: int = logging.WARNING) -> logging.Handler:
    """One stderr handler on the root logger for the command: one line per record (module docstring)."""
    root = logging.getLogger()
    for existing in root.handlers:
        if isinstance(existing, _StderrHandler):  # main() called again in one process (tests)
            return existing
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    handler = _StderrHandler()
    handler.setFormatter(_OneLineFormatter(debug))
    handler.addFilter(_DropRunEngineNoise())
    handler.setLevel(level)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    logging.raiseExceptions = False  # a log line to a hung-up terminal must not print a "Logging error" traceback
    return handler
