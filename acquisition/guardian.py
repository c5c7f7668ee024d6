"""Furnace guardian: a tiny separate process that switches the heater off if the acquiring process dies.

The session (`hotstage.acquisition.interlocks`) starts it for a rig of real instruments, as its own interpreter::

    python -m hotstage.acquisition.guardian --resource TCPIP0::10.0.0.5::7777::SOCKET --visa-library @py \\
        --log DATA/guardian.log

(never through multiprocessing: a fork or spawn would re-import the user's script). Protocol on its stdin, a
pipe whose write end only the session holds:

* the guardian prints ``ready`` on stdout once pyvisa is loaded and the VISA library opened;
* the session writes ``safe`` when it closes after the heater was switched off (confirmed by ``RANGE?``),
  then closes the pipe; the guardian logs one quiet line and exits 0;
* end of file (or a new parent pid) without ``safe`` means the session died (SIGKILL, OOM, power to the
  computer is another matter: the controller's own TLIMIT covers that). The operating system closed the
  session's sockets with it, so the guardian now opens the furnace controller itself, sends ``RANGE 1,0`` and
  ``RANGE 2,0`` (both heater outputs of the Lake Shore 336), reads ``RANGE?`` back for each, and writes one
  loud line to stderr and to the log: switched off and confirmed (exit 0), or NOT switched off (exit 1).
  Connecting is retried for ``--connect-window`` seconds, since the port of a one-connection instrument
  frees only when the dead session's connection is gone.

While the session is alive the guardian holds no connection to the instrument (one-connection instruments).
It ignores SIGINT and runs in its own session (Ctrl-C in the terminal is meant for the acquisition, not for
it). It imports only pyvisa, so it is ready within about a second.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Guardian", "GuardianError", "main", "HEATER_OUTPUTS", "LS336_ASRL"]

HEATER_OUTPUTS = (1, 2)
"""The Model 336's heater outputs (manual ch. 6, RANGE: outputs 1/2 ranges 0-3)."""
LS336_ASRL = {"baud_rate": 57600, "data_bits": 7, "parity": "odd", "stop_bits": "one"}
"""USB virtual serial settings of the Model 336 (manual §6.3; the same as ``hotstage.devices.lakeshore.LS336_SERIAL``)."""
READY_TIMEOUT_S = 30.0
"""Wall seconds the session waits for the guardian's ``ready`` (a cold interpreter and pyvisa import)."""
CONNECT_WINDOW_S = 30.0
"""Wall seconds the guardian keeps trying to reach the controller after the session died."""
POLL_S = 0.2
"""Wall seconds between checks of the parent pid while waiting on the pipe."""
IO_TIMEOUT_MS = 2000


class GuardianError(RuntimeError):
    """The guardian could not be started (the session does not start without it)."""


# ------------------------------------------------------------------------------------ session side
class Guardian:
    """Parent-side handle of one guardian process (start it, then `release` it on a clean close)."""

    def __init__(self, resource: str, visa_library: str = "@py", *, log_path: str | os.PathLike[str],
                 outputs: Sequence[int] = HEATER_OUTPUTS, connect_window_s: float = CONNECT_WINDOW_S) -> None:
        """Describe the guardian (nothing starts before `start`)."""
        self.resource = resource
        self.visa_library = visa_library
        self.log_path = Path(log_path)
        self.outputs = tuple(int(o) for o in outputs)
        self.connect_window_s = float(connect_window_s)
        self.proc: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        """The guardian's command line."""
        cmd = [sys.executable, "-m", "hotstage.acquisition.guardian", "--resource", self.resource,
               "--visa-library", self.visa_library, "--log", str(self.log_path),
               "--parent-pid", str(os.getpid()), "--connect-window", f"{self.connect_window_s:g}"]
        for out in self.outputs:
            cmd += ["--output", str(out)]
        return cmd

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> Guardian:
        """Start the process and wait for its ``ready``; GuardianError (process stopped) if it does not come."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True,
            start_new_session=True, close_fds=True,
        )
        line = _readline_within(self.proc, ready_timeout_s)
        if line.strip() != "ready":
            self._kill()
            raise GuardianError(
                f"the furnace guardian for {self.resource} did not start within {ready_timeout_s:g} s "
                f"(said {line.strip()!r}); see {self.log_path}"
            )
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self

    def release(self, *, safe: bool, wait_s: float = 10.0) -> int | None:
        """Tell the guardian the session is closing: ``safe`` after the heater was confirmed off, else nothing, so it
        switches the heater off itself once this process lets go of the controller. Returns its exit code, or None
        when it was left to work on (not safe) or did not exit within ``wait_s``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        assert proc.stdin is not None
        try:
            if safe:
                proc.stdin.write("safe\n")
                proc.stdin.flush()
            proc.stdin.close()
        except OSError:  # it died: nothing to tell
            pass
        if not safe:
            threading.Thread(target=proc.wait, name="guardian-reaper", daemon=True).start()
            return None
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            threading.Thread(target=proc.wait, name="guardian-reaper", daemon=True).start()
            return None

    @property
    def pid(self) -> int | None:
        """The guardian's process id while it is held."""
        return None if self.proc is None else self.proc.pid

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _readline_within(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """One line of the process's stdout, or '' when none arrives within `timeout_s` wall seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    return proc.stdout.readline() if ready else ""


# ----------------------------------------------------------------------------------- guardian side
def _log(path: Path, message: str, *, loud: bool) -> None:
    """Append one line to the log file; loud lines also go to stderr."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} hotstage guardian[{os.getpid()}]: {message}"
    if loud:
        print(line, file=sys.stderr, flush=True)
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        print(f"hotstage guardian: cannot write {path}: {exc}", file=sys.stderr, flush=True)


def wait_for_parent(parent_pid: int, stream: Any = None) -> bool:
    """Block until the parent closes the pipe or dies; True when it said ``safe`` first."""
    stream = sys.stdin if stream is None else stream
    fd = stream.fileno()
    buffer = b""
    safe = False
    while True:
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return safe
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            safe = safe or any(line.strip() == b"safe" for line in lines)
        elif os.getppid() != parent_pid:  # the pipe outlived the parent (a forked child holds it)
            return safe


def switch_off(rm: Any, resource: str, outputs: Sequence[int]) -> dict[int, int]:
    """Open `resource`, send ``RANGE <out>,0`` for each output and read ``RANGE?`` back; output → range read."""
    kwargs: dict[str, Any] = {"read_termination": "\r\n", "write_termination": "\r\n", "timeout": IO_TIMEOUT_MS}
    if resource.upper().startswith("ASRL"):
        from pyvisa import constants

        kwargs.update(baud_rate=LS336_ASRL["baud_rate"], data_bits=LS336_ASRL["data_bits"],
                      parity=constants.Parity.odd, stop_bits=constants.StopBits.one)
    inst = rm.open_resource(resource, **kwargs)
    try:
        read: dict[int, int] = {}
        for out in outputs:
            inst.write(f"RANGE {out},0")
        for out in outputs:
            read[out] = int(inst.query(f"RANGE? {out}").strip())
        return read
    finally:
        inst.close()


def guard(args: argparse.Namespace) -> int:
    """The guardian's life: get ready, wait for the parent, act if it died without saying ``safe``."""
    log_path = Path(args.log)
    outputs = tuple(args.output or HEATER_OUTPUTS)
    try:
        import pyvisa

        rm = pyvisa.ResourceManager(args.visa_library) if args.visa_library else pyvisa.ResourceManager()
    except Exception as exc:  # noqa: BLE001 - reported to the session, which refuses to start
        _log(log_path, f"cannot open the VISA library {args.visa_library!r}: {exc}", loud=True)
        print(f"error: {exc}", flush=True)
        return 2
    print("ready", flush=True)
    sys.stdout.close()
    if wait_for_parent(args.parent_pid):
        _log(log_path, f"session (pid {args.parent_pid}) closed with the heater off; nothing to do", loud=False)
        return 0
    deadline = time.monotonic() + args.connect_window
    last: BaseException | None = None
    while True:
        try:
            read = switch_off(rm, args.resource, outputs)
            if all(r == 0 for r in read.values()):
                _log(log_path, f"the acquiring process (pid {args.parent_pid}) died without switching the furnace "
                     f"off: heater outputs {', '.join(map(str, outputs))} switched OFF on {args.resource} "
                     f"(RANGE? reads 0)", loud=True)
                return 0
            last = RuntimeError(f"RANGE? reads {read}")
        except Exception as exc:  # noqa: BLE001 - retried until the window closes, then reported
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    _log(log_path, f"the acquiring process (pid {args.parent_pid}) died and the furnace heater could NOT be "
         f"switched off on {args.resource} ({type(last).__name__}: {last}): SWITCH THE HEATER OFF AT THE "
         "CONTROLLER NOW", loud=True)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m hotstage.acquisition.guardian``."""
    p = argparse.ArgumentParser(prog="python -m hotstage.acquisition.guardian", description=__doc__.split("\n\n")[0])
    p.add_argument("--resource", required=True, help="VISA resource of the Lake Shore 336")
    p.add_argument("--visa-library", default="@py", help="pyvisa backend ('@py', '' for the installed VISA)")
    p.add_argument("--output", type=int, action="append", choices=HEATER_OUTPUTS,
                   help="heater output to switch off (repeatable; default both)")
    p.add_argument("--log", required=True, help="log file (appended)")
    p.add_argument("--parent-pid", type=int, default=None, help="pid of the session (default: our parent)")
    p.add_argument("--connect-window", type=float, default=CONNECT_WINDOW_S,
                   help="seconds to keep trying to reach the controller")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hotstage.acquisition.guardian``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.parent_pid is None:
        args.parent_pid = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return guard(args)


if __name__ == "__main__":
    sys.exit(main())
