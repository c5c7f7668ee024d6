"""SCPI array instruments (PL spectrometer, FTIR/THz spectrometer, powder XRD detector) as ophyd Devices.

Protocol (SCPI-style, shared by the three instruments and by the emulators in ``simulated/``):

* Transport: raw TCP socket (``TCPIP0::<host>::<port>::SOCKET``; 5025 is the customary SCPI socket port),
  or pyvisa-sim. Terminator LF in both directions.
* ``*IDN?`` -> ``<vendor>,<model>,<serial>,<firmware>`` (emulators: ``HOTSTAGE-SIM,<MODEL>,...``);
  checked only for being non-empty unless ``expected_idn`` (a substring) is given.
* ``CONF:INT <s>`` integration time in *instrument* seconds (experiment seconds: the emulator's clock runs
  ``time_scale`` times faster than the wall). Sent at stage() and before an acquisition whenever the
  ``exposure`` signal changed since the last write (format ``%.6g``).
* ``INIT`` starts one acquisition and returns at once (no reply); then ``*OPC?`` blocks until it is
  complete and replies ``1``. The pyvisa timeout of that ``*OPC?`` is exposure/time_scale + ``opc_margin``
  wall seconds.
* ``FETC:DATA?`` -> IEEE-488.2 definite-length block ``#<n><len><bytes>`` + LF, bytes = little-endian
  float64 (IEEE 488.2-1992 §8.7.9), read with pyvisa ``query_binary_values(datatype='d',
  is_big_endian=False, container=numpy.ndarray)``. The number of values must equal the axis length.
* ``FETC:AXIS?`` -> the same block format, the axis; ``FETC:AXIS:UNIT?`` -> ``deg`` | ``cm-1`` | ``nm``
  (must match the device class). Both are queried at stage() and lazily by describe(); they must answer
  before any ``INIT``.
* ``SOUR:WAV?`` (XRD only) -> X-ray wavelength in Å (primary line), read as configuration.
* ``SYST:ERR?`` -> ``<code>,"<message>"`` (``0,"No error"``); queried after any failure so the raised
  error carries the instrument's own error text.

* ``STAT:OPER:COND?`` -> ``1`` while acquiring, else ``0``.

Per trigger the wire sees exactly: [``CONF:INT <s>``], ``INIT``, ``STAT:OPER:COND?``, ``*OPC?``, ``FETC:DATA?``
(plus ``FETC:AXIS:UNIT?``/``FETC:AXIS?`` when no axis has been read yet). The query right after ``INIT`` dates
the exposure's start: commands run in order, so it started between sending ``INIT`` and that reply
(``last_exposure_wall``, used for the temperature at mid-exposure: ``hotstage.devices.stamp``).

Faults and the retry policy per command (transport: ``hotstage.devices.visa``):

* ``*IDN?``, ``FETC:AXIS:UNIT?``, ``FETC:AXIS?``, ``SOUR:WAV?``, ``*OPC?``, ``FETC:DATA?``, ``STAT:OPER:COND?``:
  idempotent queries, re-asked after a timeout or a dropped connection (session reopened) or a garbage/
  truncated reply (input drained). ``FETC:DATA?`` returns the last acquisition again, so re-asking is safe;
  a block whose length differs from the axis counts as a bad reply and is re-fetched.
* ``CONF:INT <s>``, ``ABOR``: absolute settings, re-sent after a dropped connection.
* ``INIT`` is **not** idempotent (a second INIT would start another exposure, or be refused with -213 while
  one runs, and a lost INIT would make ``FETC:DATA?`` return the previous spectrum). It is never re-sent
  blindly: if the connection is lost after it was sent, the device reconnects and asks
  ``STAT:OPER:COND?``; ``1`` (acquiring) → the acquisition started, wait for it with ``*OPC?``; ``0`` →
  unknown whether it ran, so ``ABOR`` (known idle state, no data) and ``INIT`` again — at most
  ``retry.attempts`` − 1 times. Costs one extra exposure, never returns stale data.
* ``SYST:ERR?`` pops the error queue: asked once, for the error message only.

Connecting: constructing a device opens nothing; ``connect(timeout=...)`` opens the VISA session and checks
``*IDN?`` (one error naming the device and the resource if either fails); ``connect(mock=True)`` (or ``mock=True``
at construction) uses an in-memory instrument (``hotstage.devices.mock.MockScpiArray``) for tests and offline use.
Using an unconnected device raises :class:`~hotstage.devices.visa.NotConnectedError` ("... call connect() first").

Settings are configuration signals, recorded in every event descriptor's ``configuration``: ``exposure``
(experiment s, > 0) and ``opc_margin`` (wall s added to the ``*OPC?`` timeout, >= 0), next to the axis (and the
XRD source wavelength).

Saturation: with ``full_scale`` set (the largest value the instrument can report: ADC or counter full scale;
the simulated rig passes its emulators' values), every acquisition sets the ``saturated`` signal (a boolean
in every event, key ``<name>_saturated``) to True when any point reached full scale, and logs a warning with
the number of clipped points. The data are kept as measured: clipped peaks are flagged, not dropped, so the
analysis can exclude or down-weight them. Without ``full_scale`` the signal is omitted from events.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import DeviceStatus

from .mock import MockInstrument, MockScpiArray
from .settings import SettingSignal, non_negative, positive
from .visa import (
    DEFAULT_TIMEOUT_S,
    InstrumentError,
    InstrumentIdentityError,
    InstrumentInDoubtError,
    InstrumentReplyError,
    RetryPolicy,
    VisaInstrument,
    VisaSignalRO,
    not_connected,
    open_instrument,
)

__all__ = [
    "ArraySignal",
    "AcquisitionError",
    "ScpiArrayDetector",
    "PLSpectrometer",
    "FTIRSpectrometer",
    "XRDDetector",
]

#: numpy dtype string of every array on the wire (little-endian float64), as event-model wants it.
DTYPE_NUMPY = "<f8"

log = logging.getLogger(__name__)

#: SCPI commands this driver writes that set an absolute state (re-sent after a dropped connection).
IDEMPOTENT_COMMANDS = ("CONF:INT ", "ABOR", "*CLS", "FORM ")


def _idempotent(command: str) -> bool:
    """Retry policy of the SCPI writes: settings yes, ``INIT`` never (module doc)."""
    return command.upper().startswith(IDEMPOTENT_COMMANDS)


def _opc(reply: str) -> str:
    """``*OPC?`` must answer exactly ``1``."""
    if reply.strip() != "1":
        raise ValueError(f"*OPC? replied {reply!r}, expected '1'")
    return "1"


def _flag(reply: str) -> int:
    """``STAT:OPER:COND?``: 0 idle, 1 acquiring."""
    value = int(reply.strip())
    if value not in (0, 1):
        raise ValueError(f"STAT:OPER:COND? replied {reply!r}, expected 0 or 1")
    return value


class AcquisitionError(InstrumentError):
    """An acquisition (INIT / *OPC? / FETC:DATA?) failed; the message names instrument and resource."""


class ArraySignal(Signal):
    """A 1-D float64 array held by the device (set by trigger() or by an axis query).

    describe() reports dtype "array", dtype_numpy "<f8", shape [n] (n from the value, else from the
    parent's axis), units and dims so that event-model and TiledWriter know the array before the first event.
    """

    def __init__(self, *, units: str, dim: str, is_axis: bool = False, **kwargs: Any) -> None:
        """Remember units, the dimension name and whether this is the axis signal."""
        kwargs.setdefault("value", None)
        super().__init__(**kwargs)
        self._units = units
        self._dim = dim
        self._is_axis = is_axis

    def get(self, **kwargs: Any) -> Any:
        """The last array; the axis is fetched from the instrument the first time."""
        if self._readback is None:
            if self._is_axis:
                self.parent.refresh_axis()
            else:
                n = len(self.parent.axis_signal.get())
                Signal.put(self, np.full(n, np.nan), force=True)
        return self._readback

    def describe(self) -> dict[str, dict[str, Any]]:
        """Array data key with shape, dtype, dtype_numpy, units and dims."""
        value = self.get()
        visa = getattr(self.parent, "_visa", None)
        src = "FETC:AXIS?" if self._is_axis else "FETC:DATA?"
        return {
            self.name: {
                "source": f"visa://{visa.resource_name if visa else '?'}/{src}",
                "dtype": "array",
                "dtype_numpy": DTYPE_NUMPY,
                "shape": [int(len(value))],
                "dims": [self._dim],
                "units": self._units,
            }
        }


class ScpiArrayDetector(Device):
    """Base of the SCPI array instruments: exposure (config), one data array, one axis array (config).

    Subclasses declare the data and axis components and set ``data_attr``, ``axis_attr`` and
    ``axis_unit`` (the expected ``FETC:AXIS:UNIT?`` reply).
    """

    exposure = Cpt(SettingSignal, value=1.0, units="s", check=positive, kind=Kind.config)
    """Integration time per acquisition, experiment seconds."""
    opc_margin = Cpt(SettingSignal, value=10.0, units="s", check=non_negative, kind=Kind.config)
    """Wall seconds added to the ``*OPC?`` timeout (exposure/time_scale + opc_margin)."""
    saturated = Cpt(Signal, value=False, kind=Kind.normal)

    data_attr: ClassVar[str] = ""
    axis_attr: ClassVar[str] = ""
    axis_unit: ClassVar[str] = ""
    instrument_kind: ClassVar[str] = "SCPI array instrument"
    mock_axis: ClassVar[tuple[float, float, int]] = (0.0, 1.0, 11)
    """Axis of the in-memory instrument of ``connect(mock=True)``: first, last, number of points."""

    def __init__(
        self,
        resource: str,
        *,
        name: str,
        resource_manager: str | None = None,
        time_scale: float = 1.0,
        exposure: float = 1.0,
        opc_margin: float = 10.0,
        io_timeout: float = DEFAULT_TIMEOUT_S,
        expected_idn: str | None = None,
        check_identity: bool = True,
        full_scale: float | None = None,
        retry: RetryPolicy | None = None,
        mock: bool = False,
        wall_clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        """Describe the instrument at ``resource`` (backend ``resource_manager``, default "@py"); opens nothing.

        ``connect()`` opens it and checks the identity (``mock=True``: an in-memory instrument instead).

        ``exposure`` is in experiment seconds; ``time_scale`` experiment seconds per wall second;
        ``opc_margin`` wall seconds added to the ``*OPC?`` timeout; ``io_timeout`` wall seconds per query;
        ``full_scale`` the instrument's largest reportable value (enables the ``saturated`` flag);
        ``retry`` the transient-fault policy (default ``hotstage.devices.visa.DEFAULT_RETRY``);
        ``wall_clock`` dates each exposure (``last_exposure_wall``; the rig's ExperimentClock uses the same clock).
        """
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.resource = resource
        self.time_scale = float(time_scale)
        self.resource_manager = resource_manager
        self.io_timeout = float(io_timeout)
        self.check_identity = bool(check_identity)
        self.retry = retry
        self.mock = bool(mock)
        self.expected_idn = expected_idn
        self._visa: VisaInstrument | None = None
        self._written_exposure: float | None = None
        self.full_scale = None if full_scale is None or not math.isfinite(full_scale) else float(full_scale)
        self.restarts = 0
        """Acquisitions re-started (ABOR + INIT) after a lost INIT (diagnostics, tests)."""
        self._wall = wall_clock
        self.last_exposure_wall: tuple[float, float] | None = None
        """(start, *OPC? answered) of the last acquisition, on ``wall_clock``: when it was exposed. The start is the
        middle of INIT's confirmation (INIT, then a query answered after it: the instrument started in between)."""
        self.last_start_dating_wall = 0.0
        """Half the width of that confirmation (wall s): how far the dated start may be from the real one."""
        super().__init__("", name=name, **kwargs)
        self.exposure.put(exposure)
        self.opc_margin.put(opc_margin)
        if self.full_scale is None:
            self.saturated.kind = Kind.omitted

    def connect(self, *, timeout: float | None = None, mock: bool | None = None) -> "ScpiArrayDetector":
        """Open the VISA session and check ``*IDN?``; returns the device. A no-op when connected.

        ``timeout`` (wall s) bounds opening the session and each try of the identity query (default: the
        backend's open timeout and ``io_timeout``; the transport's retry policy still applies). ``mock`` (default:
        the constructor's) uses an in-memory instrument
        (``hotstage.devices.mock.MockScpiArray``, axis ``mock_axis``). Failing to open or identify raises one
        InstrumentError naming the device and the resource; the session is closed again.
        """
        if self._visa is not None:
            return self
        mock = self.mock if mock is None else bool(mock)
        instrument = f"{self.instrument_kind} '{self.name}'"
        visa: Any
        if mock:
            first, last, n = self.mock_axis
            handler = MockScpiArray(model=self.expected_idn or type(self).__name__, axis_unit=self.axis_unit,
                                    axis=np.linspace(first, last, n))
            visa = MockInstrument(self.resource, instrument=instrument, handler=handler)
        else:
            visa = open_instrument(
                self.resource,
                instrument=instrument,
                backend=self.resource_manager or "@py",
                read_termination="\n",
                write_termination="\n",
                timeout_s=self.io_timeout,
                retry=self.retry,
                idempotent=_idempotent,
                open_timeout_s=timeout,
            )
        self._visa = visa
        self.mock = mock
        if self.check_identity:
            try:
                self.identify(timeout_s=timeout)
            except BaseException:
                self._visa = None
                visa.close()
                raise
        return self

    # -- accessors --------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``destroy()``."""
        return self._visa is not None and super().connected

    @property
    def visa(self) -> VisaInstrument:
        """The transport (its ``lock`` serialises every exchange with this instrument); NotConnectedError before
        ``connect()``."""
        if self._visa is None:
            raise not_connected(self)
        return self._visa

    @property
    def data_signal(self) -> ArraySignal:
        """The spectrum/pattern signal (name differs per subclass)."""
        return getattr(self, self.data_attr)

    @property
    def axis_signal(self) -> ArraySignal:
        """The axis signal (configuration)."""
        return getattr(self, self.axis_attr)

    # -- instrument operations --------------------------------------------------------------------
    def identify(self, *, timeout_s: float | None = None) -> str:
        """Query ``*IDN?``; raise InstrumentIdentityError if empty or lacking ``expected_idn``."""

        def check(reply: str) -> str:
            if not reply or (self.expected_idn is not None and self.expected_idn not in reply):
                raise InstrumentIdentityError(
                    f"{self.visa.instrument}: {self.resource} answered *IDN? with {reply!r}; expected an identity "
                    f"containing {self.expected_idn!r}",
                    instrument=self.visa.instrument,
                    command="*IDN?",
                    resource=self.resource,
                )
            return reply

        return self.visa.query("*IDN?", parse=check, timeout_s=timeout_s)

    def instrument_error(self) -> str:
        """Query ``SYST:ERR?`` (one entry of the error queue; destructive, so asked once)."""
        return self.visa.query("SYST:ERR?", retry=False)

    def refresh_axis(self) -> np.ndarray:
        """Query ``FETC:AXIS:UNIT?`` (checked) and ``FETC:AXIS?``; cache and return the axis."""
        visa = self.visa

        def unit_check(reply: str) -> str:
            unit = reply.strip().strip('"')
            if unit != self.axis_unit:
                raise InstrumentReplyError(
                    f"{visa.instrument}: FETC:AXIS:UNIT? on {self.resource} replied {unit!r}, expected {self.axis_unit!r}",
                    instrument=visa.instrument,
                    command="FETC:AXIS:UNIT?",
                    resource=self.resource,
                )
            return unit

        with visa.lock:
            visa.query("FETC:AXIS:UNIT?", parse=unit_check)
            axis = visa.query_block("FETC:AXIS?")
        if axis.ndim != 1 or axis.size == 0:
            raise InstrumentReplyError(
                f"{visa.instrument}: empty axis block from {self.resource}",
                instrument=visa.instrument,
                command="FETC:AXIS?",
                resource=self.resource,
            )
        Signal.put(self.axis_signal, axis, force=True)
        data = self.data_signal._readback
        if data is None or len(data) != len(axis):
            Signal.put(self.data_signal, np.full(len(axis), np.nan), force=True)
        return axis

    def _write_exposure(self, exposure: float) -> None:
        """Send ``CONF:INT`` if the instrument does not already have this integration time."""
        if self._written_exposure != exposure:
            self.visa.write(f"CONF:INT {exposure:.6g}")
            self._written_exposure = exposure

    # -- bluesky interface ------------------------------------------------------------------------
    def stage(self) -> list[Any]:
        """Write the integration time and read the axis (configuration) before a run."""
        staged = super().stage()
        exposure = float(self.exposure.get())
        if exposure <= 0:
            raise ValueError(f"{self.name}: exposure must be > 0 s, got {exposure}")
        self._written_exposure = None
        self._write_exposure(exposure)
        self.refresh_axis()
        return staged

    def unstage(self) -> list[Any]:
        """Forget what was written so the next stage() writes it again."""
        self._written_exposure = None
        return super().unstage()

    def trigger(self) -> DeviceStatus:
        """Start one acquisition; the status finishes when the data array has been fetched."""
        self.visa  # noqa: B018 - NotConnectedError here, not in the acquisition thread
        status = DeviceStatus(self)
        exposure = float(self.exposure.get())
        threading.Thread(
            target=self._acquire, args=(status, exposure), name=f"{self.name}-acquire", daemon=True
        ).start()
        return status

    def _acquire(self, status: DeviceStatus, exposure: float) -> None:
        """[CONF:INT], INIT, *OPC? (long timeout), FETC:DATA? (length checked against the axis); flag saturation."""
        visa = self.visa
        try:
            with visa.lock:
                axis = self.axis_signal._readback
                if axis is None:
                    axis = self.refresh_axis()
                self._write_exposure(exposure)
                self._start_and_wait(exposure)
                n = len(axis)

                def check(values: np.ndarray) -> None:
                    if len(values) != n:
                        raise InstrumentReplyError(
                            f"{visa.instrument}: FETC:DATA? on {self.resource} returned {len(values)} values but "
                            f"the axis (FETC:AXIS?) has {n}",
                            instrument=visa.instrument,
                            command="FETC:DATA?",
                            resource=self.resource,
                        )

                data = visa.query_block("FETC:DATA?", check=check)
            self._flag_saturation(data)
            Signal.put(self.data_signal, data, force=True)
        except Exception as exc:
            status.set_exception(self._acquisition_error(exc))
        else:
            status.set_finished()

    def _start_and_wait(self, exposure: float) -> None:
        """INIT then *OPC?; after a lost connection INIT is repeated only if no acquisition runs (module doc)."""
        visa = self.visa
        opc_timeout = exposure / self.time_scale + float(self.opc_margin.get())
        self.last_exposure_wall = None
        sent = self._wall()
        visa.write("INIT")
        restarts = 0
        while True:
            try:
                if sent is not None:
                    # commands run in order: by this reply INIT has run, so the exposure started in [sent, now]
                    visa.query("STAT:OPER:COND?", parse=_flag)
                    answered = self._wall()
                    started, self.last_start_dating_wall = 0.5 * (sent + answered), 0.5 * (answered - sent)
                    sent = None
                visa.query("*OPC?", timeout_s=opc_timeout, parse=_opc)
                self.last_exposure_wall = (started, self._wall())
                return
            except InstrumentInDoubtError as doubt:
                # the session was reopened and INIT was among the unconfirmed writes
                running = visa.query("STAT:OPER:COND?", parse=_flag)
                if running:
                    log.warning("%s: connection lost after INIT; the acquisition is running, waiting for it", self.name)
                    continue
                if restarts >= max(1, visa.retry.attempts - 1):
                    raise doubt
                restarts += 1
                self.restarts += 1
                log.warning("%s: connection lost after INIT and no acquisition running: ABOR, INIT again", self.name)
                visa.write("ABOR")
                sent = self._wall()
                visa.write("INIT")

    def _flag_saturation(self, data: np.ndarray) -> None:
        """Set ``saturated`` (any point at full scale) and warn with the number of clipped points."""
        if self.full_scale is None:
            return
        clipped = int(np.count_nonzero(data >= self.full_scale))
        Signal.put(self.saturated, clipped > 0, force=True)
        if clipped:
            log.warning(
                "%s: saturated acquisition: %d of %d points at full scale %g (%s)",
                self.name, clipped, len(data), self.full_scale, self.resource,
            )

    def _acquisition_error(self, exc: BaseException) -> AcquisitionError:
        """Wrap a failure, appending the instrument's SYST:ERR? entry when it can be read."""
        visa = self.visa
        visa.clear_input()
        try:
            queue = visa.query("SYST:ERR?", timeout_s=min(visa.timeout_s, 1.0), retry=False)
        except Exception as err:  # the instrument may be gone; the original error matters more
            queue = f"<unavailable: {err}>"
        err = AcquisitionError(
            f"{self.name}: acquisition on {self.resource} failed: {exc}; SYST:ERR? -> {queue}",
            instrument=visa.instrument,
            command=getattr(exc, "command", ""),
            resource=self.resource,
        )
        err.__cause__ = exc
        return err

    def destroy(self) -> None:
        """Close the VISA session."""
        visa, self._visa = self._visa, None
        if visa is not None:
            visa.close()
        super().destroy()

    close = destroy


class PLSpectrometer(ScpiArrayDetector):
    """Photoluminescence spectrometer: counts vs wavelength (nm)."""

    counts = Cpt(ArraySignal, units="counts", dim="wavelength", kind=Kind.normal)
    wavelength = Cpt(ArraySignal, units="nm", dim="wavelength", is_axis=True, kind=Kind.config)

    data_attr = "counts"
    axis_attr = "wavelength"
    axis_unit = "nm"
    instrument_kind = "PL spectrometer"
    mock_axis = (600.0, 820.0, 221)


class FTIRSpectrometer(ScpiArrayDetector):
    """FTIR spectrometer for THz/far-IR: absorbance vs wavenumber (cm⁻¹)."""

    absorbance = Cpt(ArraySignal, units="a.u.", dim="wavenumber", kind=Kind.normal)
    wavenumber = Cpt(ArraySignal, units="cm^-1", dim="wavenumber", is_axis=True, kind=Kind.config)

    data_attr = "absorbance"
    axis_attr = "wavenumber"
    axis_unit = "cm-1"
    instrument_kind = "FTIR spectrometer"
    mock_axis = (20.0, 400.0, 191)


class XRDDetector(ScpiArrayDetector):
    """Powder XRD detector: counts vs 2θ (deg); source wavelength (Å) as configuration."""

    counts = Cpt(ArraySignal, units="counts", dim="two_theta", kind=Kind.normal)
    two_theta = Cpt(ArraySignal, units="deg", dim="two_theta", is_axis=True, kind=Kind.config)
    wavelength = Cpt(VisaSignalRO, query="SOUR:WAV?", parse=float, units="angstrom", precision=5, kind=Kind.config)

    data_attr = "counts"
    axis_attr = "two_theta"
    axis_unit = "deg"
    instrument_kind = "XRD detector"
    mock_axis = (10.0, 80.0, 351)
