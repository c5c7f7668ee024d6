"""``hotstage sim serve``: run the four instrument emulators in the foreground until Ctrl-C / SIGTERM.

Prints one JSON line with the VISA resource strings and the time scale, e.g.::

    {"furnace": "TCPIP0::127.0.0.1::40123::SOCKET", "xrd": "...", "thz": "...", "pl": "...", "time_scale": 1.0}

so that a script (or ``hotstage run --rig ...``) can connect real device code to them.

Fault injection (``hotstage.simulated.faults``):

* ``--fault SPEC`` (repeatable) arms a fault at start, e.g. ``--fault furnace:drop_connection@after=20``,
  ``--fault xrd:garbage@count=3``, ``--fault furnace:runaway@delay=120``, ``--fault pl:timeout@count=inf``
  (grammar ``INSTRUMENT:KIND[@key=value,...]``; kinds: drop_connection, timeout, slow, garbage, truncated,
  wrong_length, saturation, overshoot, runaway, heater_failure).
* ``--control`` (or ``--control-port N``) opens the runtime control channel: a JSON-lines TCP socket on
  127.0.0.1 whose port is added to the JSON line as ``"control": <port>``. One JSON object per line in,
  one per line out::

      {"op": "inject", "spec": "xrd:garbage@count=3"}            -> {"ok": true, "fault": {...}}
      {"op": "inject", "instrument": "furnace", "kind": "runaway", "params": {"delay": 30}}
      {"op": "clear"}  /  {"op": "clear", "instrument": "xrd"}   -> {"ok": true, "removed": 1}
      {"op": "list"}  /  {"op": "history"}  /  {"op": "truth"}   (truth: plant state, heater_range included)

  e.g. ``echo '{"op": "clear"}' | nc 127.0.0.1 <port>``. Without ``--control`` nothing else listens.

Exit code 0 on
SIGINT/SIGTERM; 2 on bad arguments (one line: ports outside 0–65535, a time scale that is not a finite number in
(0, 10000], a negative seed), an unreadable or invalid sample file (SampleConfigError is a ValueError, checked
before anything listens) or a port already in use. ``acquisition/cli.py`` calls :func:`main` with the
arguments after ``sim serve``; ``python -m hotstage.simulated.serve`` works too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main", "build_parser", "add_arguments", "run", "MAX_TIME_SCALE"]

MAX_TIME_SCALE = 10000.0
"""Fastest simulated time (experiment s per wall s), as for a rig TOML (`hotstage.acquisition.config`): beyond it the
emulators' polling cannot keep an acquisition cadence."""


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line `PROG: error: …` and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("hotstage").strip()
        self.exit(2, f"hotstage: error: {command}: {message}\n")


def port_number(text: str) -> int:
    """A TCP port for a server: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0–65535; 0: any free port)")
    return port


def time_scale(text: str) -> float:
    """Experiment seconds per wall second: a finite number in (0, MAX_TIME_SCALE]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= MAX_TIME_SCALE):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0 and at most {MAX_TIME_SCALE:g}")
    return value


def seed(text: str) -> int:
    """A non-negative integer seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``hotstage sim serve``."""
    p = _OneLineParser(
        prog="hotstage sim serve",
        description="Serve the simulated Lake Shore 336 furnace, XRD detector, FTIR/THz and PL spectrometers "
        "on 127.0.0.1 until interrupted.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``hotstage sim serve`` to `p` (its own parser, or the `hotstage` CLI's subcommand)."""
    p.add_argument("--sample", metavar="FILE", help="sample TOML (default: the built-in (CsPbI3)0.4(agZIF-62)0.6)")
    p.add_argument(
        "--time-scale", metavar="K", type=time_scale, default=1.0,
        help="simulated seconds per wall second (default 1: real time)",
    )
    p.add_argument("--seed", type=seed, default=None, help="random seed (default: the sample file's seed)")
    for name in ("furnace", "xrd", "thz", "pl"):
        p.add_argument(f"--{name}-port", type=port_number, default=0, metavar="N", help=f"TCP port of the {name} (0: any free)")
    p.add_argument(
        "--fault", action="append", default=[], metavar="SPEC",
        help="arm a fault at start: INSTRUMENT:KIND[@key=value,...], e.g. furnace:drop_connection@after=20 "
        "(repeatable; see simulated/faults.py)",
    )
    p.add_argument("--control", action="store_true", help="open the JSON-lines fault control socket on 127.0.0.1")
    p.add_argument("--control-port", type=port_number, default=None, metavar="N", help="port of the control socket (implies --control)")


async def _serve(args: argparse.Namespace) -> int:
    """Start the emulators on this loop, print the resources, wait for a signal, stop."""
    from .faults import ControlServer
    from .rig import EmulatorHost
    from .world import SimWorld

    world = SimWorld(args.sample, args.time_scale, args.seed)
    ports = {n: getattr(args, f"{n}_port") for n in ("furnace", "xrd", "thz", "pl")}
    host = EmulatorHost(world, ports=ports)
    for spec in args.fault:
        host.faults.inject_spec(spec)  # FaultSpecError is a ValueError: exit 2
    control = None
    if args.control or args.control_port is not None:
        control = ControlServer(host.faults, truth=world.truth, port=args.control_port or 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await host.start_async()
    try:
        info: dict = {**host.resources, "time_scale": world.time_scale}
        if control is not None:
            await control.start()
            info["control"] = control.port
        print(json.dumps(info), flush=True)
        await stop.wait()
    finally:
        if control is not None:
            await control.stop()
        await host.stop_async()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` (default sys.argv[1:]), serve until SIGINT/SIGTERM, return 0."""
    return run(build_parser().parse_args(list(sys.argv[1:] if argv is None else argv)))


def run(args: argparse.Namespace) -> int:
    """Serve with parsed arguments (of :func:`build_parser`) until SIGINT/SIGTERM; 2 with one line on bad input."""
    try:
        if args.sample:
            from .parameters import load_sample

            load_sample(args.sample)  # before anything listens
        return asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:  # unreadable/invalid sample file, bad fault spec, port in use
        print(f"hotstage: error: sim serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
