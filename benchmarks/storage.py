"""Benchmark: what storing runs in the embedded Tiled catalog costs the RunEngine, and how fast events show up.

Run: ``python benchmarks/storage.py [--points 300] [--exposure 0.02] [--reps 3]`` (~60-90 s on 2 shared cores).

Every figure is a ratio against a baseline measured in the same process, same run of this script:

(a) baseline: RunEngine, ``ophyd.sim`` scalar detector ``det`` + a 4000-float array signal, no storage;
(b) plain ``TiledWriter(batch_size=1)`` subscribed directly (fewer points: it costs ~0.1 s per point);
(c) thread writer, ``CatalogWriter(..., process=False)``: enqueue on the RunEngine thread, timed flushes
    on a thread of the same process (shares the GIL with the RunEngine);
(d) process writer, ``CatalogWriter(...)`` (default): enqueue, a courier thread pipes batches to a
    writer process (its own interpreter, ``python -m hotstage.acquisition.storage.worker``: the ready time
    printed below is its import + catalog-open cost, paid again by every restart) that owns the TiledWriter
    and its own in-process Tiled app on the same files.

Each is measured with zero exposure (the RunEngine is CPU-bound, ~2 ms per point: the worst case for
anything else in the process) and with a simulated exposure (``--exposure`` s per point, like a real
detector). (a), (c), (d) are interleaved ``--reps`` times and the minimum of each is kept (the least
disturbed by other processes on the shared machine); writers are flushed between runs, outside the timing.
Visibility latency = time from the event's ``time`` (acquisition) until a reader in this process polling
the catalog every 20 ms sees the row, for a plan that acquires a point every 20 ms, and (process writer
only) for a plan acquiring back to back with zero exposure (the RunEngine's process CPU-bound: the case
where the writer process gets the least CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bluesky.plan_stubs as bps  # noqa: E402
import bluesky.plans as bp  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter  # noqa: E402
from ophyd.sim import SynSignal, det, motor  # noqa: E402

from hotstage.acquisition.storage import CatalogWriter, close_catalog, open_catalog  # noqa: E402

ARRAY_LEN = 4000


def make_detectors(exposure: float):
    """Return [scalar det, 4000-float array signal with the given exposure]."""
    rng = np.random.default_rng(0)
    spectrum = SynSignal(func=lambda: rng.random(ARRAY_LEN), name="spectrum", exposure_time=exposure)
    return [det, spectrum]


def per_point(RE: RunEngine, dets, points: int, **md) -> tuple[float, str]:
    """Run a `points`-point scan; return (seconds per point, run uid)."""
    t0 = time.perf_counter()
    (uid,) = RE(bp.scan(dets, motor, 0, 1, points), **md)
    return (time.perf_counter() - t0) / points, uid


def visibility(catalog, writer, points: int, period: float) -> list[float]:
    """Latencies (s) from acquisition to readable, for a plan taking a point every `period` s."""
    RE = RunEngine()
    RE.subscribe(writer)
    acquired: dict[int, float] = {}
    uid_box: list[str] = []

    def note(name, doc):
        if name == "start":
            uid_box.append(doc["uid"])
        elif name == "event":
            acquired[doc["seq_num"]] = doc["time"]

    RE.subscribe(note)
    seen: dict[int, float] = {}
    done = threading.Event()
    read_errors: list[str] = []

    def poll():
        while not uid_box and not done.is_set():
            time.sleep(0.005)
        while not done.is_set() or len(seen) < points:
            try:
                table = catalog[uid_box[0]]["primary"].base["internal"].read(["seq_num"])
                now = time.time()
                for s in table["seq_num"]:
                    seen.setdefault(int(s), now)
            except KeyError:
                pass
            except Exception as exc:  # noqa: BLE001 - a reader racing the writer; count it and go on
                read_errors.append(repr(exc))
            if done.is_set() and time.time() > done_at[0] + 5:
                break
            time.sleep(0.02)

    done_at = [0.0]
    poller = threading.Thread(target=poll)
    poller.start()
    dets = make_detectors(0.0)

    def plan():
        yield from bps.open_run()
        for _ in range(points):
            yield from bps.trigger_and_read(dets)
            yield from bps.sleep(period)
        yield from bps.close_run()

    RE(plan())
    done_at[0] = time.time()
    done.set()
    poller.join()
    if read_errors:
        print(f"reader errors while polling: {len(read_errors)}, first: {read_errors[0][:300]}")
    return [seen[s] - acquired[s] for s in acquired if s in seen] + [float("inf")] * (
        len(acquired) - len(set(acquired) & set(seen))
    )


def main() -> None:
    """Measure and print per-point times, ratios against the in-run baseline, and visibility latency."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300, help="points per run at zero exposure")
    parser.add_argument("--slow-points", type=int, default=100, help="points per run with exposure")
    parser.add_argument("--tw-points", type=int, default=30, help="points for plain TiledWriter(batch_size=1)")
    parser.add_argument("--exposure", type=float, default=0.02)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = open_catalog(Path(tmp) / "data")
        thread_writer = CatalogWriter(catalog, process=False)
        t0 = time.perf_counter()
        proc_writer = CatalogWriter(catalog)
        ready = time.perf_counter() - t0
        setups = {
            "a": (RunEngine(), None),
            "c": (RunEngine(), thread_writer),
            "d": (RunEngine(), proc_writer),
        }
        for RE, writer in setups.values():
            if writer is not None:
                RE.subscribe(writer)
        tw_RE = RunEngine()
        tw_RE.subscribe(TiledWriter(catalog, batch_size=1))

        results: dict[tuple[str, float], list[float]] = {}
        drains: dict[str, list[float]] = {"c": [], "d": []}
        for exposure, points in ((0.0, args.points), (args.exposure, args.slow_points)):
            dets = make_detectors(exposure)
            for RE, writer in setups.values():  # warm-up
                per_point(RE, dets, 10)
                if writer is not None:
                    writer.flush()
            for _ in range(args.reps):
                for key, (RE, writer) in setups.items():
                    results.setdefault((key, exposure), []).append(per_point(RE, dets, points)[0])
                    if writer is not None:
                        t0 = time.perf_counter()
                        assert writer.flush(timeout=120)
                        drains[key].append(time.perf_counter() - t0)
            per_point(tw_RE, dets, 3)  # warm-up
            results[("b", exposure)] = [per_point(tw_RE, dets, args.tw_points)[0]]

        lat = {key: visibility(catalog, setups[key][1], points=100, period=0.02) for key in ("c", "d")}
        lat_busy = visibility(catalog, proc_writer, points=args.points, period=0.0)
        errors = {key: len(setups[key][1].errors) for key in ("c", "d")}
        thread_writer.close()
        proc_writer.close()
        close_catalog(catalog)

    labels = {
        "a": "(a) no storage",
        "b": "(b) TiledWriter(batch_size=1)",
        "c": "(c) thread writer",
        "d": "(d) process writer",
    }
    print(f"storage benchmark: det + {ARRAY_LEN}-float array (ophyd.sim), embedded catalog, "
          f"min of {args.reps} interleaved runs; process writer ready {ready:.1f} s after construction")
    for exposure, points in ((0.0, args.points), (args.exposure, args.slow_points)):
        base = min(results[("a", exposure)])
        print(f"exposure {exposure * 1e3:.0f} ms ({points} points per run):")
        for key in "abcd":
            runs = results[(key, exposure)]
            note = f"({args.tw_points} points)" if key == "b" else "runs " + ", ".join(f"{x * 1e3:.2f}" for x in runs)
            print(f"  {labels[key]:32s} {min(runs) * 1e3:8.2f} ms/point {min(runs) / base:6.3f}x  {note}")
    for key in ("c", "d"):
        print(f"  {labels[key]}: flush() after a run took at most {max(drains[key]):.2f} s")
    for key in ("c", "d"):
        finite = [x for x in lat[key] if x != float("inf")]
        print(f"visibility {labels[key]} (100 points, one every 20 ms, reader polls every 20 ms): "
              f"median {statistics.median(lat[key]) * 1e3:.0f} ms, max {max(lat[key]) * 1e3:.0f} ms, "
              f"{len(lat[key]) - len(finite)} never seen")
    finite = [x for x in lat_busy if x != float("inf")]
    print(f"visibility {labels['d']} ({args.points} points, zero exposure, RunEngine CPU-bound): "
          f"median {statistics.median(lat_busy) * 1e3:.0f} ms, max {max(lat_busy) * 1e3:.0f} ms, "
          f"{len(lat_busy) - len(finite)} never seen")
    print(f"writer errors: thread {errors['c']}, process {errors['d']}; "
          f"total benchmark time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
