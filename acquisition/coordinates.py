"""A raw stream read back from the catalog with each array's axis as a named coordinate with units.

The detectors describe their arrays with ``dims`` and ``units`` (``xrd_counts``: dims ``["two_theta"]``, units
``counts``; the axis ``xrd_two_theta``: a configuration key with the same dims, units ``deg``), and TiledWriter
stores that data key as the array node's metadata. But bluesky-tiled-plugins' TiledWriter names the inner
dimensions of *internal* (event-embedded) arrays by their size (``dim_int_1``, ``_internal_dims`` in
``writing/tiled_writer.py``, 2025–26 releases) and only honours ``dims`` for external (StreamResource) data, and
the configuration (the axis values) is not part of ``stream.read()``. So a plain read gives
``xrd_counts (time, dim_int_1)``; `read_stream` renames that dimension from the data key's ``dims`` and attaches
the axis from the descriptor configuration as a coordinate with its units, using only what a plain client can
read (``stream.metadata["data_keys"]`` and ``["configuration"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["read_stream", "CoordinateError"]


class CoordinateError(ValueError):
    """A stream's array and its axis do not fit together (length or dims)."""


def _axes(stream_md: dict[str, Any]) -> dict[str, tuple[np.ndarray, str, str]]:
    """dim name -> (axis values, units, axis key) from the configuration keys that are 1-D arrays with dims."""
    out: dict[str, tuple[np.ndarray, str, str]] = {}
    for conf in (stream_md.get("configuration") or {}).values():
        keys = conf.get("data_keys") or {}
        data = conf.get("data") or {}
        for key, desc in keys.items():
            dims = desc.get("dims") or []
            if desc.get("dtype") == "array" and len(dims) == 1 and key in data:
                out[dims[0]] = (np.asarray(data[key], dtype=float), str(desc.get("units", "")), key)
    return out


def read_stream(run: Any, stream: str) -> xr.Dataset:
    """``run[stream].read()`` with each array's inner dimension named from its data key's ``dims`` and the axis
    (configuration key with the same dims) attached as that dimension's coordinate, ``units`` in the attrs of
    both the coordinate and the array. Per-event scalars keep the ``time`` dimension."""
    node = run[stream]
    md = dict(node.metadata)
    ds = node.read()
    data_keys = md.get("data_keys") or {}
    axes = _axes(md)
    renamed: dict[str, xr.DataArray] = {}
    for name in list(ds.data_vars):
        da = ds[name]
        desc = data_keys.get(name) or {}
        dims = list(desc.get("dims") or [])
        if da.ndim == 1 + len(dims) and dims:
            da = da.rename(dict(zip(da.dims[1:], dims)))
            for dim in dims:
                if dim in axes:
                    values, units, key = axes[dim]
                    if values.size != da.sizes[dim]:
                        raise CoordinateError(
                            f"stream {stream!r}: {name} has {da.sizes[dim]} points along {dim!r} but its axis "
                            f"{key} has {values.size}")
                    da = da.assign_coords({dim: xr.DataArray(values, dims=(dim,), attrs={"units": units,
                                                                                          "source_key": key})})
        if "units" in desc:
            da.attrs["units"] = desc["units"]
        renamed[name] = da.drop_vars([c for c in da.coords if c != "time" and c not in da.dims], errors="ignore")
    return xr.Dataset(renamed, attrs={"stream": stream})
