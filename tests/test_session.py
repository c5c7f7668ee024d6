"""Whole simulated runs through the session, read back from the catalog with a plain Tiled client."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import event_model
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from tiled.catalog import from_uri as catalog_from_uri
from tiled.client import Context, from_context
from tiled.server.app import build_app

from conftest import LOCKSTEP_SCALE
from hotstage.acquisition.config import RigConfig
from hotstage.acquisition.session import Session
from hotstage.plans.program import Cool, Hold, Ramp, TemperatureProgram
from hotstage.simulated.parameters import SampleSpec

PROGRAM = TemperatureProgram(25.0, (Ramp(120.0, 20.0), Hold(2.0), Cool(60.0, 20.0)))
CADENCE = {"xrd": {"every_C": 10.0}, "pl": {"every_C": 10.0}, "thz": {"every_C": 20.0}}
SHAPES = {"xrd": ("xrd_counts", 5000), "thz": ("thz_absorbance", 651), "pl": ("pl_counts", 1101)}


def plain_tiled_client(data_dir: Path):
    """A Tiled client built only from tiled's public API over the session's files (no hotstage code)."""
    adapter = catalog_from_uri(
        f"sqlite:///{data_dir / 'catalog.db'}",
        writable_storage=[f"file://{data_dir / 'data'}", f"sqlite:///{data_dir / 'tables.sqlite'}"],
    )
    return from_context(Context.from_app(build_app(adapter)))


def validate(name: str, doc: dict) -> None:
    """Raise unless the document validates against event-model's JSON schema for its kind."""
    event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)


@pytest.fixture
def session(tmp_path: Path, request: pytest.FixtureRequest):
    """A session on a lock-step simulated rig; `@pytest.mark.parametrize("session", [K], indirect=True)` makes it
    a wall-clock rig at time_scale K instead (what a pause timed in wall seconds needs)."""
    time_scale = getattr(request, "param", None)
    with Session(rig=RigConfig(time_scale=time_scale or LOCKSTEP_SCALE, cadence=CADENCE), sample=SampleSpec.default(),
                 data_dir=tmp_path, progress=False, stepped=time_scale is None) as s:
        yield s


# PROGRAM lasts 585 experiment s: ~4 s of wall time at 150x, so a pause after 1.5 s lands mid-ramp. End to end
# (`pytest -m e2e`): timed on the wall clock against the TCP emulators.
SLOW = pytest.mark.parametrize("session", [150.0], indirect=True)


def test_insitu_run_is_stored_and_reads_back_with_a_plain_client(session: Session, tmp_path: Path) -> None:
    uid = session.insitu(PROGRAM, md={"operator": "pytest"})
    run = plain_tiled_client(tmp_path)[uid]

    start, stop = run.metadata["start"], run.metadata["stop"]
    assert stop["exit_status"] == "success"
    assert start["sample"]["cspbi3_wt_frac"] == 0.4 and start["sample"]["composition"]["agZIF-62"] == 0.6
    assert start["program"]["segments"] == PROGRAM.to_dict()["segments"]
    assert start["simulated"] is True and start["rig"]["kind"] == "simulated"
    assert start["versions"]["bluesky"] and start["operator"] == "pytest"
    assert set(run) == {"xrd", "thz", "pl", "truth", "segments"}  # segments: one summary per program segment
    assert list(run["segments"].read()["segment_index"].values) == list(range(len(PROGRAM.segments)))

    for stream, (key, n_points) in SHAPES.items():
        ds = run[stream].read()
        assert ds[key].shape[1] == n_points
        n_events = ds[key].shape[0]
        # one event at the start plus one per cadence step of travel: up 95 °C, down ~60 °C
        assert n_events >= (95 + 50) / CADENCE[stream]["every_C"] - 1, (stream, n_events)
        temperatures = ds["furnace_temperature"].values
        assert temperatures.min() > 20.0 and temperatures.max() < 125.0
        assert np.all(np.diff(ds["clock_elapsed"].values) > 0)  # experiment time in every event
        assert np.all(np.isfinite(ds["furnace_sample_temperature"].values))
    assert run["truth"].read()["truth_wf_CsPbI3-delta"].shape[0] == sum(
        run[s].read()["furnace_temperature"].shape[0] for s in SHAPES
    )

    names = []
    for name, doc in session.catalog[uid].documents():  # replay needs the json-seq exporter hotstage registers
        validate(name, doc)
        names.append(name)
    assert names[0] == "start" and names[-1] == "stop" and "descriptor" in names


def _interrupt_after(session: Session, seconds: float) -> threading.Thread:
    """Ask the RunEngine to pause (as Ctrl-C does) from another thread after `seconds` of wall time."""
    def pause() -> None:
        time.sleep(seconds)
        session.RE.request_pause(defer=False)

    thread = threading.Thread(target=pause, daemon=True)
    thread.start()
    return thread


@pytest.mark.e2e
@SLOW
def test_pause_then_resume_gives_one_complete_run(session: Session, tmp_path: Path) -> None:
    _interrupt_after(session, 1.5)
    with pytest.raises(RunEngineInterrupted):
        session.insitu(PROGRAM)
    assert session.RE.state == "paused"
    assert session.rig.furnace.heater_range.get() == 0  # heater off while paused
    (uid,) = session.RE.resume()
    session.writer.flush()
    run = plain_tiled_client(tmp_path)[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    xrd = run["xrd"].read()
    assert xrd["furnace_temperature"].values.max() > 115.0  # the program went on to its top temperature
    assert session.rig.furnace.heater_range.get() == 0


@pytest.mark.e2e
@SLOW
def test_abort_stores_stop_and_every_event_and_leaves_heater_off(session: Session, tmp_path: Path) -> None:
    _interrupt_after(session, 1.5)
    with pytest.raises(RunEngineInterrupted):
        session.insitu(PROGRAM)
    (uid,) = session.RE.abort(reason="operator aborted")
    session.writer.flush()
    run = plain_tiled_client(tmp_path)[uid]
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert run.metadata["stop"]["num_events"]["xrd"] == run["xrd"].read()["xrd_counts"].shape[0] > 0
    assert session.rig.furnace.heater_range.get() == 0
