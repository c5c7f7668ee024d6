"""The simulated rig: emulators on 127.0.0.1 plus the real ophyd devices connected to them over TCP.

``SimulatedRig`` builds one :class:`~simulated.world.SimWorld` (clock, furnace plant, sample,
synthesizers), serves it through four emulators (Lake Shore 336 furnace, XRD detector, FTIR/THz and PL
spectrometers) on ephemeral ports from an asyncio loop in a background thread, and connects the ophyd
devices of ``devices/`` to them through pyvisa-py (``@py``, ``TCPIP0::127.0.0.1::<port>::SOCKET``), so
every byte a real instrument would see goes over a real socket. ``time_scale`` (simulated seconds per
wall second) is handed to the devices so their settle times, timeouts and exposures are in experiment
seconds. The default 240 replays a 75-min temperature program in ~19 s of wall time (see DEFAULT_TIME_SCALE).

``EmulatorHost`` is the server half alone (also used by ``hotstage sim serve``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ophyd.status import Status

from .clock import SimClock
from .faults import FaultInjector
from .lakeshore_server import LakeShore336Server, LineServer
from .parameters import SampleSpec
from .scpi_server import INSTRUMENTS, ScpiArrayServer
from .thermal import ThermalParameters
from .world import SimWorld

__all__ = ["SimulatedRig", "EmulatorHost", "TruthReader", "DEFAULT_TIME_SCALE", "DEFAULT_EXPOSURES", "INSTRUMENT_NAMES"]

DEFAULT_TIME_SCALE = 240.0
"""Simulated s per wall s: the demo's 75-min (4500 s) program takes ~19 wall s.

Why not faster: the simulated clock runs free, as a real one does, so the RunEngine, the live-analysis process
and the catalog-writer process must keep up with it, and on the 2-core project machine they share two cores.
Measured with the demo (XRD and PL every 5 °C at 10 °C/min: one acquisition every 30 experiment s): at 240 and
300 every cadence point was acquired (125 and 122 XRD events); at 400 and 600 the cadence lost points (95 and 66
events), because one acquisition cycle then took longer than the 75/50 ms of wall time between points."""

DEFAULT_EXPOSURES = {"xrd": 10.0, "thz": 5.0, "pl": 1.0}
"""Default integration times (experiment s): lab powder XRD frame, FTIR co-add block, PL spectrum."""

INSTRUMENT_NAMES = ("furnace", "xrd", "thz", "pl")

TICK_WALL_S = 0.5
"""Wall seconds between background advances of the world (keeps lazy catch-ups small when idle)."""


class EmulatorHost:
    """The four emulators of one world, served from an asyncio loop in a background thread."""

    def __init__(self, world: SimWorld, *, host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> None:
        """Prepare servers for ``world``; ``ports`` maps instrument name -> port (0/absent = ephemeral)."""
        ports = dict(ports or {})
        unknown = set(ports) - set(INSTRUMENT_NAMES)
        if unknown:
            raise ValueError(f"unknown instrument(s) {sorted(unknown)}; known: {INSTRUMENT_NAMES}")
        self.world = world
        self.faults = FaultInjector(world)
        """Fault injection for all four emulators and the furnace plant (``hotstage.simulated.faults``)."""
        f = self.faults
        self.servers: dict[str, LineServer] = {
            "furnace": LakeShore336Server(world, host=host, port=ports.get("furnace", 0), faults=f),
            "xrd": ScpiArrayServer(world, "xrd", host=host, port=ports.get("xrd", 0), faults=f),
            "thz": ScpiArrayServer(world, "thz", host=host, port=ports.get("thz", 0), faults=f),
            "pl": ScpiArrayServer(world, "pl", host=host, port=ports.get("pl", 0), faults=f),
        }
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tick: asyncio.Task[None] | None = None

    @property
    def resources(self) -> dict[str, str]:
        """Instrument name -> VISA resource string."""
        return {name: srv.resource for name, srv in self.servers.items()}

    async def start_async(self) -> None:
        """Start every server and the idle ticker on the running loop."""
        started: list[LineServer] = []
        try:
            for srv in self.servers.values():
                await srv.start()
                started.append(srv)
        except BaseException:
            for srv in started:
                await srv.stop()
            raise
        self._tick = asyncio.get_running_loop().create_task(self._ticker())

    async def stop_async(self) -> None:
        """Stop the ticker and every server (connections closed, pending acquisitions aborted)."""
        if self._tick is not None:
            self._tick.cancel()
            await asyncio.gather(self._tick, return_exceptions=True)
            self._tick = None
        for srv in self.servers.values():
            await srv.stop()

    async def _ticker(self) -> None:
        """Advance the world now and then so an idle world never has hours to catch up at once."""
        while True:
            await asyncio.sleep(TICK_WALL_S)
            self.world.advance()

    def start(self) -> None:
        """Run a fresh event loop in a daemon thread and start the servers on it."""
        if self.loop is not None:
            raise RuntimeError("emulators already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="hotstage-sim-emulators", daemon=True)
        thread.start()
        self.loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.start_async(), loop).result(timeout=10.0)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop servers, executor and loop; join the thread (idempotent)."""
        loop, thread = self.loop, self._thread
        if loop is None:
            return
        self.loop = self._thread = None
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(timeout=10.0)
                asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=30.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10.0)
            if not loop.is_running():
                loop.close()


def _clock_aligned_with(world: SimWorld) -> Callable[[], float]:
    """Wall-clock function for ExperimentClock whose first reading is the world clock's origin.

    ExperimentClock takes its origin from the first call; handing it the instant the world clock started
    makes ``clock.elapsed`` equal the world's simulated time (until someone calls ``clock.reset()``).
    """
    first = [True]
    wall0 = world.clock.wall_origin

    def wall() -> float:
        if first[0]:
            first[0] = False
            return wall0
        return world.clock.wall()

    return wall


def install_stepped_sleep(RE: Any, clock: SimClock) -> None:
    """Replace the RunEngine's ``sleep`` message handler: jump ``clock`` by the sleep × time_scale, then yield.

    A plan's ``bps.sleep(wall_s)`` means "let wall_s × time_scale simulated seconds pass"; on a stepped clock
    they pass at once (the event loop still runs one turn, so the RunEngine stays responsive)."""

    async def _stepped_sleep(msg: Any) -> None:
        clock.advance(float(msg.args[0]) * clock.time_scale)
        await asyncio.sleep(0)

    RE.register_command("sleep", _stepped_sleep)


class TruthReader:
    """Bluesky Readable of the world's ground truth (``truth_<key>`` numbers), for tests and validation only.

    The keys are fixed when the reader is built (``SimWorld.truth()`` always returns the same set), so
    describe() and read() agree for a whole run. ``prepare(instrument)`` (bluesky's Preparable: the plans send
    ``bps.prepare(truth, "xrd")`` before each truth event) makes the next reads describe the middle of that
    instrument's last exposure — the moment its data describe — instead of the moment of the read.
    """

    def __init__(self, world: SimWorld, *, name: str = "truth") -> None:
        """Read ``world``'s truth; data keys are ``<name>_<truth key>``."""
        self.world = world
        self.name = name
        self.parent = None
        self._keys = tuple(world.truth())
        self._instrument: str | None = None

    def prepare(self, value: Any) -> Status:
        """Describe ``value``'s (an instrument name; None: now) last mid-exposure from now on; done at once."""
        self._instrument = None if value is None else str(value)
        status = Status(obj=self)
        status.set_finished()
        return status

    def read(self) -> dict[str, dict[str, Any]]:
        """Truth at the prepared instrument's mid-exposure (or now), one reading per key (timestamp = wall time)."""
        at = None if self._instrument is None else self.world.exposure_mid(self._instrument)
        truth = self.world.truth(at_s=at)
        ts = time.time()
        return {f"{self.name}_{k}": {"value": float(truth.get(k, float("nan"))), "timestamp": ts} for k in self._keys}

    def describe(self) -> dict[str, dict[str, Any]]:
        """One scalar number per truth key."""
        return {
            f"{self.name}_{k}": {"source": f"simulated://truth/{k}", "dtype": "number", "shape": []}
            for k in self._keys
        }

    def read_configuration(self) -> dict[str, dict[str, Any]]:
        """No configuration."""
        return {}

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """No configuration."""
        return {}

    @property
    def hints(self) -> dict[str, list[str]]:
        """Nothing to plot by default."""
        return {"fields": []}


class SimulatedRig:
    """Context manager: simulated world + emulators on 127.0.0.1 + connected ophyd devices.

    Attributes once started: ``furnace`` (LakeShore336Furnace), ``xrd`` (XRDDetector), ``thz``
    (FTIRSpectrometer), ``pl`` (PLSpectrometer), ``clock`` (ExperimentClock aligned with the world's
    simulated time), ``truth_reader`` (a Readable of the ground truth), ``world``, ``resources``,
    ``faults`` (the emulators' :class:`~simulated.faults.FaultInjector`: ``rig.faults.inject("xrd", "garbage",
    count=3)``, ``rig.faults.clear()``). ``faults=["furnace:drop_connection@after=20", ...]`` arms faults
    (spec strings, see ``hotstage.simulated.faults``) before the devices connect.
    """

    def __init__(
        self,
        sample: SampleSpec | str | Path | None = None,
        time_scale: float = DEFAULT_TIME_SCALE,
        seed: int | None = None,
        *,
        thermal: ThermalParameters | None = None,
        exposures: dict[str, float] | None = None,
        furnace_kwargs: dict[str, Any] | None = None,
        detector_kwargs: dict[str, Any] | None = None,
        ports: dict[str, int] | None = None,
        faults: list[str] | tuple[str, ...] = (),
        stepped: bool = False,
    ) -> None:
        """Describe the rig (nothing starts before ``__enter__``/``start()``).

        ``stepped``: the world's clock jumps whenever someone waits (the furnace settling, a detector
        integrating, the RunEngine's ``sleep`` once `install_stepped_sleep` is applied to it), so plans and the
        simulator advance in lock-step (``hotstage.simulated.clock``); unit tests use it with a low time_scale.

        ``sample``: None (default composite), a SampleSpec or a sample TOML path; ``seed`` None uses the
        sample's seed; ``exposures`` experiment seconds per detector (defaults ``DEFAULT_EXPOSURES``);
        ``furnace_kwargs``/``detector_kwargs`` go to the device constructors.
        """
        self.sample = sample
        self.time_scale = float(time_scale)
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.seed = seed
        self.thermal = thermal
        self.exposures = {**DEFAULT_EXPOSURES, **(exposures or {})}
        self.furnace_kwargs = dict(furnace_kwargs or {})
        self.detector_kwargs = dict(detector_kwargs or {})
        self.ports = ports
        self.fault_specs = tuple(faults)
        self.stepped = bool(stepped)
        self.world: SimWorld | None = None
        self.host: EmulatorHost | None = None
        self.furnace: Any = None
        self.xrd: Any = None
        self.thz: Any = None
        self.pl: Any = None
        self.clock: Any = None
        self.truth_reader: TruthReader | None = None
        self._devices: list[Any] = []

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> "SimulatedRig":
        """Build the world, start the emulators, connect the devices."""
        if self.host is not None:
            raise RuntimeError("SimulatedRig already started")
        from hotstage.devices.clock import ExperimentClock
        from hotstage.devices.lakeshore import LakeShore336Furnace
        from hotstage.devices.spectrometers import FTIRSpectrometer, PLSpectrometer, XRDDetector

        self.world = SimWorld(self.sample, self.time_scale, self.seed, thermal=self.thermal,
                              clock=SimClock(self.time_scale, stepped=self.stepped))
        self.truth_reader = TruthReader(self.world)
        self.host = EmulatorHost(self.world, ports=self.ports)
        try:
            for spec in self.fault_specs:
                self.host.faults.inject_spec(spec)
            self.host.start()
            self.clock = ExperimentClock(
                name="clock", time_scale=self.time_scale, wall_clock=_clock_aligned_with(self.world)
            )
            res = self.host.resources
            ts = self.time_scale
            self.furnace = LakeShore336Furnace(
                res["furnace"], name="furnace", resource_manager="@py", time_scale=ts, **self.furnace_kwargs
            )
            self._devices.append(self.furnace)
            self.furnace.connect()
            for attr, cls in (("xrd", XRDDetector), ("thz", FTIRSpectrometer), ("pl", PLSpectrometer)):
                kwargs = {"full_scale": INSTRUMENTS[attr].full_scale, "wall_clock": self.world.clock.wall,
                          **self.detector_kwargs}
                dev = cls(
                    res[attr],
                    name=attr,
                    resource_manager="@py",
                    time_scale=ts,
                    exposure=self.exposures[attr],
                    **kwargs,
                )
                setattr(self, attr, dev)
                self._devices.append(dev)
                dev.connect()
        except BaseException:
            self.close()
            raise
        if self.stepped:
            self.furnace.timebase = self.world.clock  # settle waits jump the clock instead of waiting
        return self

    def install_stepped_sleep(self, RE: Any) -> None:
        """Make ``RE``'s ``sleep`` jump this rig's clock (stepped rigs; a no-op on a wall-clock rig)."""
        if self.world is not None and self.world.clock.stepped:
            install_stepped_sleep(RE, self.world.clock)

    def close(self) -> None:
        """Close the devices, then stop the emulators and their loop (idempotent)."""
        devices, self._devices = self._devices, []
        for dev in reversed(devices):
            try:
                dev.destroy()
            except Exception:
                pass
        host, self.host = self.host, None
        if host is not None:
            host.stop()

    def __enter__(self) -> "SimulatedRig":
        """Start and return the rig."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Close everything (safe to call twice)."""
        self.close()

    # -------------------------------------------------------------------------------- access
    @property
    def resources(self) -> dict[str, str]:
        """Instrument name -> VISA resource string (``TCPIP0::127.0.0.1::<port>::SOCKET``)."""
        if self.host is None:
            raise RuntimeError("SimulatedRig is not running")
        return self.host.resources

    @property
    def faults(self) -> FaultInjector:
        """The fault injector of the running emulators (see ``hotstage.simulated.faults``)."""
        if self.host is None:
            raise RuntimeError("SimulatedRig is not running")
        return self.host.faults

    @property
    def detectors(self) -> list[Any]:
        """The three array detectors (XRD, THz, PL)."""
        return [self.xrd, self.thz, self.pl]

    def truth(self) -> dict[str, float]:
        """Ground truth now (sample truth + furnace/sample temperatures + simulated time)."""
        if self.world is None:
            raise RuntimeError("SimulatedRig was never started")
        return self.world.truth()
