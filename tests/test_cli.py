"""The `hotstage` command line as a user runs it: the console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOTSTAGE = shutil.which("hotstage") or str(Path(sys.executable).with_name("hotstage"))

SHORT_PROGRAM = """\
start_C = 25
[[segment]]
kind = "ramp"
to_C = 100
rate_C_per_min = 20
[[segment]]
kind = "hold"
minutes = 1
[[segment]]
kind = "cool"
to_C = 60
rate_C_per_min = 20
"""


def hotstage(*args: str, data: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the console script with its data under `data`, capturing output."""
    env = {**os.environ, "HOTSTAGE_DATA": str(data)}
    env.pop("HOTSTAGE_TILED_URI", None)
    return subprocess.run([HOTSTAGE, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`hotstage demo --json` once for the module: the README's main command."""
    data = tmp_path_factory.mktemp("demo-data")
    result = hotstage("demo", "--json", data=data, timeout=180.0)
    assert result.returncode == 0, result.stderr
    return data, json.loads(result.stdout)


def test_demo_runs_the_default_experiment(demo: tuple[Path, dict]) -> None:
    data, summary = demo
    assert summary["exit_status"] == "success" and summary["plan"] == "insitu_ramp"
    assert summary["sample"] == "(CsPbI3)0.4(agZIF-62)0.6"
    assert "ramp to 350.0 °C at 10.0 °C/min, hold 10.0 min, cool to 25.0 °C" in summary["program"]
    events = {name: s["events"] for name, s in summary["streams"].items()}
    # XRD and PL every 5 °C over 325 °C up and ~300 °C down, THz every 10 °C; allow for the cooling tail
    assert events["xrd"] >= 115 and events["pl"] >= 115 and events["thz"] >= 57
    assert summary["temperature_C"]["max"] == pytest.approx(350.0, abs=2.0)
    assert summary["duration_s"] < 30.0
    assert (data / "catalog.db").exists()


def test_runs_and_show_read_the_catalog(demo: tuple[Path, dict]) -> None:
    data, summary = demo
    listed = json.loads(hotstage("runs", "--json", data=data).stdout)
    raw = [row for row in listed if not row["derived_from"]]
    assert [row["uid"] for row in raw] == [summary["uid"]]
    assert raw[0]["sample"] == summary["sample"] and raw[0]["exit_status"] == "success"
    # the live analysis's derived run is listed beside it, pointing back at it
    derived = [row for row in listed if row["derived_from"]]
    assert [row["uid"] for row in derived] == [summary["derived"]["uid"]]
    assert derived[0]["derived_from"] == summary["uid"] and derived[0]["sample"] == summary["sample"]
    assert hotstage("runs", "--sample", "nonexistent", "--json", data=data).stdout.strip() == "[]"
    shown = json.loads(hotstage("show", summary["uid"][:8], "--json", data=data).stdout)
    assert shown["uid"] == summary["uid"] and shown["streams"] == summary["streams"]
    human = hotstage("show", summary["uid"], data=data).stdout
    assert summary["uid"] in human and "xrd:" in human


def test_export_writes_the_documents_as_json_lines(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """`hotstage export` writes every document of the run, in order, in the recorded-run format."""
    from acquisition.jsonl import load_jsonl

    data, summary = demo
    out = tmp_path / "run.jsonl"
    result = json.loads(hotstage("export", summary["uid"][:8], "--out", str(out), "--json", data=data).stdout)
    docs = list(load_jsonl(out))
    assert result["uid"] == summary["uid"] and result["path"] == str(out.resolve())
    assert docs[0][0] == "start" and docs[0][1]["uid"] == summary["uid"] and docs[-1][0] == "stop"
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    events: dict[str, int] = {}
    for n, d in docs:
        if n == "event":
            events[names[d["descriptor"]]] = events.get(names[d["descriptor"]], 0) + 1
    assert events == {name: s["events"] for name, s in summary["streams"].items()}
    assert result["documents"]["event"] == sum(events.values())
    assert "documents" in hotstage("export", summary["uid"], data=data).stdout  # default: DATA/exports/<uid>.jsonl
    assert (data / "exports" / f"{summary['uid']}.jsonl").exists()


def test_serve_makes_the_catalog_a_tiled_server(demo: tuple[Path, dict]) -> None:
    """`hotstage serve`: a plain Tiled client with the printed URI and key reads the demo run; SIGTERM stops it."""
    import socket

    from tiled.client import from_uri

    data, summary = demo
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOTSTAGE_DATA": str(data)}
    env.pop("TILED_API_KEY", None)
    proc = subprocess.Popen([HOTSTAGE, "serve", "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        settings = dict(part.split("=", 1) for part in proc.stdout.readline().split())
        assert settings["HOTSTAGE_TILED_URI"] == f"http://127.0.0.1:{port}"
        for _ in range(100):  # uvicorn binds just after printing
            try:
                client = from_uri(settings["HOTSTAGE_TILED_URI"], api_key=settings["TILED_API_KEY"])
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        run = client[summary["uid"]]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run["xrd"].read()["xrd_counts"].shape[0] == summary["streams"]["xrd"]["events"]
        with pytest.raises(Exception):  # noqa: B017 - no key, no access
            from_uri(settings["HOTSTAGE_TILED_URI"], api_key="wrong")[summary["uid"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly, then re-raises the signal it caught (exit by SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)


def test_run_with_program_sample_and_rig_files(tmp_path: Path) -> None:
    (tmp_path / "prog.toml").write_text(SHORT_PROGRAM)
    (tmp_path / "sample.toml").write_text('seed = 3\n[sample]\nname = "x0.25"\ncspbi3_wt_frac = 0.25\n')
    (tmp_path / "rig.toml").write_text('[rig]\ntime_scale = 240\n[cadence]\nxrd = { every_C = 10 }\n')
    result = hotstage("run", "--program", str(tmp_path / "prog.toml"), "--sample", str(tmp_path / "sample.toml"),
                      "--rig", str(tmp_path / "rig.toml"), "--json", data=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sample"] == "x0.25" and summary["exit_status"] == "success"
    # every 10 °C: the start, 7 steps up (25 → 100 °C), 2–4 down (the furnace lags the 20 °C/min cool to 60 °C)
    assert 10 <= summary["streams"]["xrd"]["events"] <= 13


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("prog.toml", SHORT_PROGRAM.replace("to_C = 100", "to_C = 900"), "segment 0 (ramp)"),
        ("prog.toml", SHORT_PROGRAM.replace("minutes = 1", "minutes = 1\ncolour = 2"), "colour"),
        ("sample.toml", "[sample]\nname = 'x'\ncspbi3_wt_frac = 1.5\n", "cspbi3_wt_frac"),
        ("rig.toml", "[rig]\nspeed = 3\n", "speed"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_runs(tmp_path: Path, file: str, content: str, message: str) -> None:
    files = {"prog.toml": SHORT_PROGRAM, "sample.toml": "[sample]\nname = 'x'\ncspbi3_wt_frac = 0.4\n", "rig.toml": ""}
    files[file] = content
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = hotstage("run", "--program", str(tmp_path / "prog.toml"), "--sample", str(tmp_path / "sample.toml"),
                      "--rig", str(tmp_path / "rig.toml"), data=tmp_path / "data")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert file in result.stderr  # the file is named
    assert not (tmp_path / "data").exists()  # nothing was opened, let alone moved


def test_sim_serve_prints_resources_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([HOTSTAGE, "sim", "serve", "--time-scale", "50"], stdout=subprocess.PIPE, text=True)
    try:
        line = json.loads(proc.stdout.readline())
        assert set(line) >= {"furnace", "xrd", "thz", "pl"} and line["time_scale"] == 50.0
        assert all(line[k].startswith("TCPIP0::127.0.0.1::") and line[k].endswith("::SOCKET")
                   for k in ("furnace", "xrd", "thz", "pl"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
