"""Raw `xrd`/`thz`/`pl` arrays read back from the catalog with their axis as a named coordinate with units.

What a plain client gets (bluesky-tiled-plugins' TiledWriter names inner dimensions of event-embedded arrays by
their size, `dim_int_N`) is checked too, so this test says when the stack starts honouring the descriptor's
``dims`` and `read_stream` can become a plain read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import LOCKSTEP_SCALE
from hotstage.acquisition.config import RigConfig
from hotstage.acquisition.coordinates import read_stream
from hotstage.acquisition.session import Session
from hotstage.plans.program import Ramp, TemperatureProgram
from hotstage.simulated.parameters import SampleSpec
from test_session import plain_tiled_client

EXPECTED = {"xrd": ("xrd_counts", "two_theta", "deg", "counts"),
            "thz": ("thz_absorbance", "wavenumber", "cm^-1", "a.u."),
            "pl": ("pl_counts", "wavelength", "nm", "counts")}


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory: pytest.TempPathFactory):
    """A short ramp without live analysis, read through a plain Tiled client."""
    data = tmp_path_factory.mktemp("coords")
    program = TemperatureProgram(30.0, (Ramp(40.0, 20.0),), name="coords-test")
    with Session(RigConfig(time_scale=LOCKSTEP_SCALE, cadence={m: {"every_C": 5.0} for m in EXPECTED}),
                 SampleSpec.default(), data, progress=False, stepped=True, analysis=False) as s:
        uid = s.insitu(program)
    return plain_tiled_client(data)[uid]


@pytest.mark.parametrize("stream", sorted(EXPECTED))
def test_array_axis_is_a_named_coordinate_with_units(raw_run, stream: str) -> None:
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
