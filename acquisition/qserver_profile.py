"""bluesky-queueserver startup module: importing it opens a hotstage session (see `hotstage.acquisition.qserver`).

The RE worker imports this module when a client opens the environment (`start-re-manager --startup-module
hotstage.acquisition.qserver_profile`, which `hotstage qserver` runs) and takes its namespace: the RunEngine `RE`,
the devices `furnace`, `xrd`, `thz`, `pl`, `clock`, and the plans below (the permissions file lists the ones users
may run). Do not import it anywhere else: it opens the rig and the catalog.

The plans here are the hotstage plans with what the rig knows filled in (limits, clock, ground truth, default
cadences, the sample-change hook), so that a queue item only carries JSON: devices by name, the temperature
program as its dict form. Their annotations are real types (the queue server validates the JSON against them and
converts device names to the devices); no `from __future__ import annotations` in this module for that reason.
"""

import typing
from collections.abc import Mapping

from bluesky.plan_stubs import mv
from bluesky.plans import count, list_scan, scan
from bluesky.protocols import Movable, Readable

from hotstage.acquisition.qserver import QueueSession as _QueueSession
from hotstage.plans import hold as _hold
from hotstage.plans import insitu as _insitu
from hotstage.plans import sintering as _sintering

_qs = _QueueSession.from_environment().open()

RE = _qs.RE
furnace = _qs.rig.furnace
xrd = _qs.rig.xrd
thz = _qs.rig.thz
pl = _qs.rig.pl
clock = _qs.rig.clock


def insitu_ramp(
    furnace: Movable,
    detectors: Mapping[str, Readable],
    program: dict[str, typing.Any],
    cadence: typing.Optional[dict[str, dict[str, float]]] = None,
    md: typing.Optional[dict[str, typing.Any]] = None,
) -> typing.Generator[typing.Any, typing.Any, typing.Any]:
    """
    Run a temperature program continuously, acquiring each modality on its cadence (one run).

    Parameters
    ----------
    furnace
        The furnace (device name: "furnace").
    detectors
        Modality -> detector name, e.g. {"xrd": "xrd", "thz": "thz", "pl": "pl"}.
    program
        The temperature program: {"start_C": 25, "segments": [{"kind": "ramp", "to_C": 350,
        "rate_C_per_min": 10}, {"kind": "hold", "minutes": 10}, {"kind": "cool", "to_C": 25,
        "rate_C_per_min": 10}]}; validated against the rig limits before anything moves.
    cadence
        Stream -> {"every_C": step} or {"every_s": seconds}; default: the rig configuration's.
    md
        Extra start-document metadata.
    """
    return (yield from _insitu.insitu_ramp(furnace, detectors, program, _qs.cadences(detectors, cadence), md=md,
                                           **_qs.bound()))


def step_and_hold(
    furnace: Movable,
    detectors: Mapping[str, Readable],
    temperatures: list[float],
    repeats: int = 1,
    settle_s: float = 0.0,
    md: typing.Optional[dict[str, typing.Any]] = None,
    rate_C_per_min: typing.Optional[float] = None,
) -> typing.Generator[typing.Any, typing.Any, typing.Any]:
    """
    Go to each temperature, wait until settled, acquire every modality `repeats` times (one run).

    Parameters
    ----------
    furnace
        The furnace (device name: "furnace").
    detectors
        Modality -> detector name, e.g. {"xrd": "xrd", "pl": "pl"}.
    temperatures
        Temperatures in °C, within the rig limits.
    repeats
        Acquisitions of each modality at each temperature.
    settle_s
        Extra experiment seconds at each temperature before acquiring.
    md
        Extra start-document metadata.
    rate_C_per_min
        Setpoint ramp rate for the moves (default: step).
    """
    return (yield from _hold.step_and_hold(furnace, detectors, temperatures, repeats, settle_s, md,
                                           rate_C_per_min=rate_C_per_min, **_qs.bound()))


def sintering_array(
    furnace: Movable,
    detectors: Mapping[str, Readable],
    compositions: list[float],
    sintering_temperatures_C: list[float],
    hold_minutes: float,
    rate_C_per_min: float,
    md: typing.Optional[dict[str, typing.Any]] = None,
    room_temperature_C: float = 25.0,
    measure_below_C: typing.Optional[float] = None,
    cool_timeout_s: float = 4 * 3600.0,
    repeats: int = 1,
    history_every_s: typing.Optional[float] = None,
    array_id: typing.Optional[str] = None,
) -> typing.Generator[typing.Any, typing.Any, typing.Any]:
    """
    One run per composition x sintering temperature: heat, hold, cool, measure at room temperature.

    On the simulated rig each condition gets a fresh simulated pellet; on a real rig the plan pauses before
    each condition for the operator to load one (resume the queue server's RunEngine to go on).

    Parameters
    ----------
    furnace
        The furnace (device name: "furnace").
    detectors
        Modality -> detector name, e.g. {"xrd": "xrd", "thz": "thz", "pl": "pl"}.
    compositions
        CsPbI3 weight fractions, each in [0, 1].
    sintering_temperatures_C
        Sintering temperatures in °C, within the rig limits.
    hold_minutes
        Minutes at the sintering temperature.
    rate_C_per_min
        Heating and cooling rate.
    md
        Extra start-document metadata.
    room_temperature_C
        Where each condition starts and ends.
    measure_below_C
        Readback below which the pellet counts as at room temperature (default room + 5 °C).
    cool_timeout_s
        Experiment seconds allowed for cooling before the run fails.
    repeats
        Room-temperature acquisitions of each modality.
    history_every_s
        Add a furnace stream with the thermal history every this many experiment seconds.
    array_id
        Shared by every run of the array (default: a new uuid).
    """
    return (yield from _sintering.sintering_array(
        furnace, detectors, compositions, sintering_temperatures_C, hold_minutes, rate_C_per_min, md,
        change_sample=_qs.change_sample(), room_temperature_C=room_temperature_C, measure_below_C=measure_below_C,
        cool_timeout_s=cool_timeout_s, repeats=repeats, history_every_s=history_every_s, array_id=array_id,
        **_qs.bound(),
    ))


__all__ = ["RE", "clock", "count", "furnace", "insitu_ramp", "list_scan", "mv", "pl", "scan", "sintering_array",
           "step_and_hold", "thz", "xrd"]
