"""The report figures of one short lock-step run (ramp, hold, cool), checked by their contents.

One session run (120 → 150 °C at 20 °C/min, 1 min hold, cool to 130 °C; every modality every 10 °C) on the
lock-step simulated rig, read back with a plain Tiled client; `write_report` writes the four PNGs and the
``*_figure`` builders are inspected: the XRD map's x axis is the stored 2θ range, the THz heat map's y axis is
monotonic temperature in each of its heating / cooling panels, the PL intensity axis is log, and the hold is
drawn (a shaded hold segment, hold events kept apart from heating and cooling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import LOCKSTEP_SCALE
from hotstage.acquisition.config import RigConfig
from hotstage.acquisition.coordinates import read_stream
from hotstage.acquisition.report import (HEATING, HOLD, COOLING, REPORT_FILES, pl_figure, segments_of,
                                         thz_figure, write_report, xrd_map_figure)
from hotstage.acquisition.session import Session
from hotstage.plans.program import Cool, Hold, Ramp, TemperatureProgram
from hotstage.simulated.parameters import SampleSpec
from test_session import plain_tiled_client

PROGRAM = TemperatureProgram(120.0, (Ramp(150.0, 20.0), Hold(1.0), Cool(130.0, 20.0)), name="report-test")
CADENCE = {"xrd": {"every_C": 10.0}, "thz": {"every_C": 10.0}, "pl": {"every_C": 10.0}}
EXPECTED = {"xrd": ("xrd_counts", "two_theta", "deg", "counts"),
            "thz": ("thz_absorbance", "wavenumber", "cm^-1", "a.u."),
            "pl": ("pl_counts", "wavelength", "nm", "counts")}
"""Array key, axis dimension, axis units, array units of each raw stream."""


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Raw and derived run of one short program, read back through a plain Tiled client."""
    data = tmp_path_factory.mktemp("report")
    with Session(RigConfig(time_scale=LOCKSTEP_SCALE, cadence=CADENCE), SampleSpec.default(), data,
                 progress=False, stepped=True) as s:
        raw_uid = s.insitu(PROGRAM)
        derived_uid = s.analysis.derived_uids[raw_uid]
    client = plain_tiled_client(data)
    return {"raw": client[raw_uid], "derived": client[derived_uid], "dir": data}


def test_report_writes_every_figure(report_run: dict[str, Any], tmp_path: Path) -> None:
    files = write_report(report_run["derived"], tmp_path)
    assert [p.name for p in files] == list(REPORT_FILES)
    for p in files:
        assert p.stat().st_size > 20_000, p  # a rendered figure, not an empty canvas


def test_segments_split_heating_hold_cooling(report_run: dict[str, Any]) -> None:
    seg = segments_of(report_run["raw"])
    assert seg is not None and list(seg.direction) == [HEATING, HOLD, COOLING]
    xrd = report_run["raw"]["xrd"].read()
    d = seg.of(xrd["clock_elapsed"].values)
    assert np.count_nonzero(d == HEATING) >= 3 and np.count_nonzero(d == COOLING) >= 1
    # the ramp ends on target and the hold starts with it: the hold's first event is the one at 150 °C
    assert np.all(np.abs(xrd["furnace_setpoint"].values[d == HOLD] - 150.0) < 1.0)


def test_xrd_map_axes(report_run: dict[str, Any]) -> None:
    raw = report_run["raw"]
    xrd = read_stream(raw, "xrd")
    tth = xrd["two_theta"].values
    fig = xrd_map_figure(xrd, segments_of(raw))
    ax_time, ax_profile, ax_heat, ax_cool = fig.axes[:4]
    for ax in (ax_time, ax_heat, ax_cool):
        lo, hi = ax.get_xlim()
        assert lo == pytest.approx(tth[0]) and hi == pytest.approx(tth[-1])
        assert "2θ" in ax.get_xlabel()
    assert "temperature" in ax_heat.get_ylabel() and "time" in ax_time.get_ylabel()
    # the hold: a shaded span with its label on the time map
    assert any("hold" in t.get_text() for t in ax_time.texts)
    # log colour scale
    from matplotlib.colors import LogNorm
    assert isinstance(ax_heat.collections[0].norm, LogNorm)


def _mesh_rows(ax: Any) -> np.ndarray:
    """Row edges (y) of the first pcolormesh on `ax`."""
    coords = ax.collections[0].get_coordinates()  # (ny+1, nx+1, 2)
    return coords[:, 0, 1]


def test_thz_heat_maps_are_on_monotonic_temperature(report_run: dict[str, Any]) -> None:
    der, raw = report_run["derived"], report_run["raw"]
    ds = der["thz_derivative"].read()
    thz = {k: np.asarray(ds[k].values) for k in ds.data_vars}
    conf = der["thz_derivative"].metadata["configuration"]["thz_derivative"]["data"]
    fig = thz_figure(thz, np.asarray(conf["wavenumber"]), 3, segments_of(raw))
    panels = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ":" in ax.get_title()}
    assert set(panels) == {"heating", "cooling", "hold"}
    seg = segments_of(raw)
    d = seg.of(thz["clock_elapsed"])
    for name, sign in (("heating", HEATING), ("cooling", COOLING)):
        ax = panels[name]
        edges = _mesh_rows(ax)
        assert np.all(np.diff(edges) > 0), name
        t = np.sort(thz["temperature"][d == sign])
        assert edges.size == t.size + 1
        assert np.all((t > edges[:-1]) & (t < edges[1:])), name  # each row's cell holds its temperature
        assert "temperature" in ax.get_ylabel()
        labels = [tx.get_text() for tx in ax.texts]
        assert "Zn–I 135" in " ".join(labels) and "Zn–I 275" in " ".join(labels)


def test_pl_intensity_axis_is_log_and_hold_is_shaded(report_run: dict[str, Any]) -> None:
    der, raw = report_run["derived"], report_run["raw"]
    ds = der["pl_fit"].read()
    pl = {k: np.asarray(ds[k].values) for k in ds.data_vars}
    fig = pl_figure(pl, segments_of(raw))
    ax_temp, ax_int = fig.axes[:2]
    assert ax_int.get_yscale() == "log"
    assert "hold segment" in [h.get_label() for h in ax_temp.patches]


@pytest.mark.parametrize("stream", sorted(EXPECTED))
def test_array_axis_is_a_named_coordinate_with_units(report_run: dict[str, Any], stream: str) -> None:
    """Raw arrays read back with their axis as a named coordinate with units (`read_stream`); a plain client gets
    the inner dimension named by size (bluesky-tiled-plugins' TiledWriter: `dim_int_N`), checked too, so this test
    says when the stack starts honouring the descriptor's ``dims`` and `read_stream` can become a plain read."""
    raw_run = report_run["raw"]
    key, dim, axis_units, units = EXPECTED[stream]
    node = raw_run[stream]
    # the descriptor as stored: dims and units on the array key and on its axis (configuration)
    assert node[key].metadata["dims"] == [dim] and node[key].metadata["units"] == units
    conf = next(c for c in node.metadata["configuration"].values() if f"{stream}_{dim}" in c.get("data_keys", {}))
    assert conf["data_keys"][f"{stream}_{dim}"]["dims"] == [dim]
    axis = np.asarray(conf["data"][f"{stream}_{dim}"])
    # plain read: the inner dimension is named by size, not by the descriptor (the stack's limit, see module doc)
    plain = node.read()[key]
    assert plain.dims[0] == "time" and plain.shape[1] == axis.size
    ds = read_stream(raw_run, stream)
    da = ds[key]
    assert da.dims == ("time", dim) and da.attrs["units"] == units
    np.testing.assert_array_equal(da[dim].values, axis)  # the stored axis, exactly
    assert da[dim].attrs["units"] == axis_units
    assert np.all(np.diff(axis) > 0)
    np.testing.assert_array_equal(da.values, plain.values)  # same numbers, only labelled
    assert "furnace_sample_temperature" in ds and ds["furnace_sample_temperature"].dims == ("time",)
