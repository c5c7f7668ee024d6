"""Make tests/data/recorded_run.jsonl: a short simulated in-situ run (raw documents, truth stream included).

    /work/venv/bin/python tests/data/make_recorded_run.py

40/60 composite, 130 → 185 °C at 10 °C/min (through the active-phase onset near 150 °C), XRD and PL every 6 °C,
THz every 6 °C, real instrument grids (XRD 5000 points); analysis off (the test replays it). ~10 patterns, < 3 MB.
XRD exposure 2 s and time_scale 150: the truth stream is read just after each acquisition while the pattern
shows the sample at mid-exposure; across the δ→γ transition (~6 wt %/°C at 10 °C/min) that delay must stay
≲ 1–2 s of experiment time for the truth to describe the pattern within ~1 wt % (see tests/test_live.py).

Beside it, recorded_run_pattern_truth.json: for each XRD event (by seq_num) the simulator's ground truth of that very
pattern (the XRD synthesizer's `last_truth`: the sample state at mid-exposure the pattern was made from), taken
when the RunEngine emits the event, i.e. before the next acquisition. The truth *stream* is read after the
acquisition and lags the pattern by half an exposure plus the read-out; across the steep δ→γ and γ→β
transitions that lag alone is worth up to ~6 wt % (measured), so phase fractions are checked against the
pattern truth and onsets/PL against the truth stream.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE.parents[1]))
    sys.path.insert(0, str(HERE))
    from hotstage.acquisition.config import RigConfig
    from hotstage.acquisition.replay import save_jsonl
    from hotstage.acquisition.session import Session
    from hotstage.plans.program import Ramp, TemperatureProgram
    from hotstage.simulated.parameters import SampleSpec
    from truth_tools import record_pattern_truth

    import tempfile

    program = TemperatureProgram(130.0, (Ramp(185.0, 10.0),), name="recorded-onset")
    cadence = {"xrd": {"every_C": 6.0}, "thz": {"every_C": 6.0}, "pl": {"every_C": 6.0}}
    with tempfile.TemporaryDirectory() as tmp:
        with Session(RigConfig(time_scale=150.0), SampleSpec.default(), tmp, progress=False,
                     analysis=False) as s:
            s.rig.xrd.exposure.set(2.0).wait(10)
            pattern_truth = record_pattern_truth(s)
            uid = s.insitu(program, cadence=cadence)
            docs = list(s.catalog[uid].documents())
    out = save_jsonl(docs, HERE / "recorded_run.jsonl")
    (HERE / "recorded_run_pattern_truth.json").write_text(json.dumps(pattern_truth, indent=0))
    print(out, out.stat().st_size, "bytes", len(docs), "documents")



if __name__ == "__main__":
    main()
