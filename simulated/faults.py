"""Fault injection for the instrument emulators and the furnace plant of the simulated rig.

One :class:`FaultInjector` belongs to each :class:`~simulated.rig.EmulatorHost` (``rig.faults`` on a
:class:`~simulated.rig.SimulatedRig`; ``--fault`` and the JSON-lines control socket of ``hotstage sim serve``).
Faults are armed per instrument (``furnace``, ``xrd``, ``thz``, ``pl``) and are either *transient*
(``count`` occurrences, then the fault disarms itself) or *persistent* (``count=None``, until ``clear()``)::

    rig.faults.inject("xrd", "garbage", count=3)                 # the next 3 replies of the XRD detector are junk
    rig.faults.inject("furnace", "drop_connection", after=20)    # the 21st message to the furnace resets the link
    rig.faults.inject("furnace", "runaway", delay=60)            # the plant heats uncontrolled after 60 sim s
    rig.faults.inject_spec("pl:saturation@count=2")              # same grammar as the CLI's --fault
    rig.faults.clear()                                           # everything back to normal

Kinds (``KINDS``) and what the emulator does:

========================  =====================================================================================
``drop_connection``       on receiving a matching message the server resets the TCP connection (RST, as a
                          rebooting instrument or a pulled cable does; ``mode="close"``: orderly FIN) without
                          executing it. The server keeps listening, so a client can reconnect.
``timeout``               the matching query is executed but its reply is never sent (a hung instrument).
``slow``                  the reply is sent after ``delay`` wall seconds (default 1.0).
``garbage``               the reply is replaced by printable junk of the same length (terminator kept).
``truncated``             only the first half of the reply is sent, then the terminator.
``wrong_length``          (XRD/THz/PL) ``FETC:DATA?`` returns a block ``drop`` values (default 7) short.
``saturation``            (XRD/THz/PL) ``FETC:DATA?`` data multiplied by ``gain`` (default: so that the
                          maximum reaches 2x full scale) and clipped at the instrument's full scale
                          (``scpi_server.ScpiInstrument.full_scale``).
``overshoot``             (furnace) the heater output is forced to 100 % of the selected range for
                          ``duration`` simulated s (default 60): the readback overshoots the setpoint, then
                          the PID brings it back.
``runaway``               (furnace) as overshoot, persistent: the plant heats uncontrolled (a stuck output
                          stage) until ``RANGE <out>,0`` (heater off) or ``clear()``.
``heater_failure``        (furnace) the heater delivers only ``fraction`` (default 0.05) of its power for
                          ``duration`` simulated s (default: persistent): setpoints above ~60 °C cannot be reached.
========================  =====================================================================================

Selection: ``match`` (a case-insensitive prefix of the message, e.g. ``"KRDG?"``, ``"FETC:DATA?"``) limits
a link fault to matching messages (default: every message for ``drop_connection``, every message that has a
reply for the reply faults); ``after=N`` lets N matching messages through before the first occurrence.
Plant faults start ``delay`` simulated seconds after injection, or with ``above`` (°C) when the control
sensor first reads that much (the plant triggers it: no poll's timing involved), and last ``duration``
simulated seconds (None: until cleared). ``count`` does not apply to plant faults.

Spec grammar (``--fault``, control socket ``{"op": "inject", "spec": ...}``)::

    INSTRUMENT:KIND[@key=value[,key=value...]]     e.g. furnace:drop_connection@after=20,count=1
                                                        xrd:timeout@match=FETC:DATA?,count=inf

``count=inf`` (or ``persistent``) means persistent; the default ``count`` is 1 for link faults.

:class:`ControlServer` is the runtime control channel for a separate ``hotstage sim serve`` process: JSON
lines over TCP on 127.0.0.1 (request ``{"op": ...}``, one reply line ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``). Operations: ``inject`` (fields as :meth:`FaultInjector.inject`, or
``spec``), ``clear`` (optional ``instrument``), ``list``, ``history``, ``truth`` (the world's ground truth,
including ``heater_range`` from the plant itself), ``counts`` (per instrument, how many ``INIT`` and
``FETC:DATA?`` the array emulators executed: an outside tester's count of acquisitions, independent of the
catalog; see :meth:`FaultInjector.count_exchange`).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "KINDS",
    "LINK_KINDS",
    "REPLY_KINDS",
    "DATA_KINDS",
    "PLANT_KINDS",
    "Fault",
    "FaultInjector",
    "FaultSpecError",
    "parse_spec",
    "ControlServer",
    "garble",
]

INSTRUMENTS = ("furnace", "xrd", "thz", "pl")
LINK_KINDS = ("drop_connection",)
"""Faults acting when a message arrives (before it is executed)."""
REPLY_KINDS = ("timeout", "slow", "garbage", "truncated")
"""Faults acting on a reply on its way out."""
DATA_KINDS = ("wrong_length", "saturation")
"""Faults acting on the data of ``FETC:DATA?`` (array instruments only)."""
PLANT_KINDS = ("overshoot", "runaway", "heater_failure")
"""Faults acting on the furnace plant (furnace only)."""
KINDS = LINK_KINDS + REPLY_KINDS + DATA_KINDS + PLANT_KINDS

DEFAULT_SLOW_S = 1.0
DEFAULT_OVERSHOOT_S = 60.0
DEFAULT_HEATER_FRACTION = 0.05
DEFAULT_WRONG_LENGTH_DROP = 7


class FaultSpecError(ValueError):
    """A fault request that cannot be honoured (unknown instrument/kind, bad parameter)."""


@dataclass
class Fault:
    """One armed fault; ``count`` None = persistent; ``fired`` counts occurrences so far."""

    instrument: str
    kind: str
    count: int | None = 1
    after: int = 0
    match: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0
    seen: int = 0
    id: int = 0

    def matches(self, command: str) -> bool:
        """True when ``command`` starts with ``match`` (case-insensitive; None matches everything)."""
        return self.match is None or command.strip().upper().startswith(self.match.strip().upper())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description."""
        return asdict(self)


def garble(reply: bytes) -> bytes:
    """Printable junk of the same length (never the LF/CR terminators, never ``#``: not a block header)."""
    junk = b"?%&@!~^*$"
    n = max(len(reply), 3)
    return bytes(junk[i % len(junk)] for i in range(n))


@dataclass
class PlantFault:
    """A fault the furnace plant applies between ``start_s`` and ``end_s`` (simulated seconds; end None = open).

    With ``above_C`` it waits instead until the control sensor first reads ``above_C`` or more, and then lasts
    ``duration_s`` (None: open): the plant starts it at a temperature, however late the caller's poll."""

    kind: str
    start_s: float
    end_s: float | None
    fraction: float = DEFAULT_HEATER_FRACTION
    above_C: float | None = None
    duration_s: float | None = None

    def active(self, t_s: float, sensor_C: float | None = None) -> bool:
        """True while the fault acts at simulated time ``t_s`` (``sensor_C``: the control sensor's °C then)."""
        if self.above_C is not None:
            if sensor_C is None or sensor_C < self.above_C:
                return False
            self.start_s = t_s  # reached: from now on a timed fault
            self.end_s = None if self.duration_s is None else t_s + self.duration_s
            self.above_C = None
        return t_s >= self.start_s and (self.end_s is None or t_s < self.end_s)


class FaultInjector:
    """Thread-safe registry of armed faults, consulted by the emulators and applied to the furnace plant."""

    def __init__(self, world: Any = None) -> None:
        """``world`` (a SimWorld, optional) receives plant faults; without it only link/reply/data faults work."""
        self.world = world
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1
        self.history: list[dict[str, Any]] = []
        """One entry per occurrence: wall time, instrument, kind, command."""
        self._exchanges: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------------------- public API
    def inject(
        self,
        instrument: str,
        kind: str,
        count: int | None = 1,
        *,
        after: int = 0,
        match: str | None = None,
        **params: Any,
    ) -> Fault:
        """Arm a fault (see the module doc for kinds and parameters) and return it."""
        instrument = str(instrument).lower()
        kind = str(kind).lower()
        if instrument not in INSTRUMENTS:
            raise FaultSpecError(f"unknown instrument {instrument!r}; known: {', '.join(INSTRUMENTS)}")
        if kind not in KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if kind in PLANT_KINDS and instrument != "furnace":
            raise FaultSpecError(f"fault {kind!r} acts on the furnace plant; instrument must be 'furnace'")
        if kind in DATA_KINDS and instrument == "furnace":
            raise FaultSpecError(f"fault {kind!r} acts on array data; instrument must be xrd, thz or pl")
        if count is not None:
            count = int(count)
            if count < 1:
                raise FaultSpecError(f"count must be >= 1 or None (persistent), got {count}")
        after = int(after)
        if after < 0:
            raise FaultSpecError(f"after must be >= 0, got {after}")
        for key in ("delay", "duration", "fraction", "gain", "above"):
            if key in params and params[key] is not None:
                params[key] = float(params[key])
        with self._lock:
            fault = Fault(instrument, kind, count, after, match, dict(params), id=self._next_id)
            self._next_id += 1
            if kind in PLANT_KINDS:
                self._arm_plant(fault)
            self._faults.append(fault)
        return fault

    def inject_spec(self, spec: str) -> Fault:
        """Arm a fault from its spec string (``furnace:drop_connection@after=20``)."""
        instrument, kind, kwargs = parse_spec(spec)
        return self.inject(instrument, kind, **kwargs)

    def clear(self, instrument: str | None = None) -> int:
        """Disarm every fault (or those of one instrument); return how many were removed."""
        with self._lock:
            keep = [f for f in self._faults if instrument is not None and f.instrument != instrument]
            removed = len(self._faults) - len(keep)
            self._faults = keep
            if instrument in (None, "furnace"):
                self._set_plant_fault(None)
        return removed

    def active(self, instrument: str | None = None) -> list[Fault]:
        """Armed faults (of one instrument)."""
        with self._lock:
            return [f for f in self._faults if instrument is None or f.instrument == instrument]

    def occurrences(self, instrument: str | None = None, kind: str | None = None) -> int:
        """How many times faults fired (filtered by instrument/kind)."""
        with self._lock:
            return sum(
                1 for h in self.history
                if (instrument is None or h["instrument"] == instrument) and (kind is None or h["kind"] == kind)
            )

    # ------------------------------------------------------------------------- emulator hooks
    def count_exchange(self, instrument: str, command: str) -> None:
        """Count one executed command of ``instrument`` (the array emulators count INIT and FETC:DATA?)."""
        with self._lock:
            per = self._exchanges.setdefault(instrument, {})
            per[command] = per.get(command, 0) + 1

    def exchange_counts(self) -> dict[str, dict[str, int]]:
        """Executed commands per instrument so far (``{"xrd": {"INIT": 12, "FETC:DATA?": 12}, ...}``)."""
        with self._lock:
            return {name: dict(per) for name, per in self._exchanges.items()}

    def take(self, instrument: str, command: str, kinds: tuple[str, ...]) -> Fault | None:
        """The fault (of ``kinds``) that fires on this message of ``instrument``, if any; counts it."""
        if not self._faults:  # fast path, no lock: the common case
            return None
        with self._lock:
            for fault in list(self._faults):
                if fault.instrument != instrument or fault.kind not in kinds or not fault.matches(command):
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.fired += 1
                self.history.append(
                    {"t": time.time(), "instrument": instrument, "kind": fault.kind, "command": command[:60]}
                )
                if fault.count is not None and fault.fired >= fault.count:
                    self._faults.remove(fault)
                return fault
        return None

    # ---------------------------------------------------------------------------------- plant
    def _arm_plant(self, fault: Fault) -> None:
        """Install a plant fault on the world's furnace plant (caller holds the lock)."""
        if self.world is None:
            raise FaultSpecError("plant faults need the SimWorld (FaultInjector(world=...))")
        now = self.world.clock.now()
        start = now + float(fault.params.get("delay") or 0.0)
        if fault.kind == "overshoot":
            duration = fault.params.get("duration", DEFAULT_OVERSHOOT_S)
        else:
            duration = fault.params.get("duration")
        length = None if duration is None or math.isinf(duration) else float(duration)
        end = None if length is None else start + length
        fraction = float(fault.params.get("fraction", DEFAULT_HEATER_FRACTION))
        above = fault.params.get("above")
        fault.count = None  # plant faults are timed, not counted
        self.history.append({"t": time.time(), "instrument": "furnace", "kind": fault.kind, "command": ""})
        self._set_plant_fault(PlantFault(fault.kind, start, end, fraction,
                                         above_C=None if above is None else float(above), duration_s=length))

    def _set_plant_fault(self, pf: PlantFault | None) -> None:
        """Hand the plant its fault (world advanced to now first, so the fault starts exactly then)."""
        if self.world is None:
            return
        with self.world.furnace() as plant:
            plant.fault = pf


def _value(text: str) -> Any:
    """Spec value: int, float, inf/None, or the string itself."""
    low = text.strip().lower()
    if low in ("inf", "persistent", "none"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``INSTRUMENT:KIND[@k=v,...]`` -> (instrument, kind, inject() keyword arguments)."""
    head, _, tail = str(spec).partition("@")
    instrument, sep, kind = head.partition(":")
    if not sep or not instrument.strip() or not kind.strip():
        raise FaultSpecError(f"fault spec {spec!r}: expected INSTRUMENT:KIND[@key=value,...]")
    kwargs: dict[str, Any] = {}
    if tail.strip():
        for item in tail.split(","):
            key, eq, val = item.partition("=")
            if not eq or not key.strip():
                raise FaultSpecError(f"fault spec {spec!r}: bad parameter {item!r} (expected key=value)")
            key = key.strip().lower()
            kwargs[key] = val.strip() if key == "match" else _value(val)
    if "count" in kwargs and kwargs["count"] is not None and not isinstance(kwargs["count"], int):
        raise FaultSpecError(f"fault spec {spec!r}: count must be an integer or inf")
    return instrument.strip().lower(), kind.strip().lower(), kwargs


class ControlServer:
    """JSON-lines control channel on 127.0.0.1 for a separate emulator process (see the module doc).

    No authentication, on purpose: it controls a *simulated* rig (arm faults, read the simulation's truth) and
    listens on the loopback interface only, so only processes on this machine reach it — the same trust as the
    emulated instruments' own ports. Keep ``host`` a loopback address: any other address would let anyone on the
    network inject faults into a rehearsal. (On a shared machine, every local user can reach it.)
    """

    def __init__(self, faults: FaultInjector, *, truth: Callable[[], dict[str, float]] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve ``faults`` (and ``truth``) on ``host:port`` (0 = ephemeral) once started."""
        self.faults = faults
        self.truth = truth
        self.host = host
        self.port = int(port)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind and listen (on the running loop)."""
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per line, one reply per line, until EOF."""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                writer.write(json.dumps(self.handle(line.decode("utf-8", "replace"))).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def handle(self, text: str) -> dict[str, Any]:
        """Execute one JSON request and return the reply object (never raises)."""
        try:
            req = json.loads(text)
            if not isinstance(req, dict):
                raise FaultSpecError("request must be a JSON object")
            op = req.get("op")
            if op == "inject":
                if "spec" in req:
                    fault = self.faults.inject_spec(str(req["spec"]))
                else:
                    params = dict(req.get("params") or {})
                    fault = self.faults.inject(
                        req["instrument"], req["kind"], req.get("count", 1),
                        after=int(req.get("after", 0)), match=req.get("match"), **params,
                    )
                return {"ok": True, "fault": fault.to_dict()}
            if op == "clear":
                return {"ok": True, "removed": self.faults.clear(req.get("instrument"))}
            if op == "list":
                return {"ok": True, "faults": [f.to_dict() for f in self.faults.active()]}
            if op == "history":
                return {"ok": True, "history": list(self.faults.history)}
            if op == "truth":
                return {"ok": True, "truth": self.truth() if self.truth else {}}
            if op == "counts":
                return {"ok": True, "counts": self.faults.exchange_counts()}
            raise FaultSpecError(f"unknown op {op!r}; known: inject, clear, list, history, truth, counts")
        except Exception as exc:  # noqa: BLE001 - the reply carries the error
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
