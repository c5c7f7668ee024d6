"""The furnace guardian: a separate process that switches the heater off when the acquiring process dies.

Against the Lake Shore 336 emulator: a dummy parent holding a guardian is SIGKILLed and the heater goes off
(confirmed on the emulator); a parent that closes saying ``safe`` leaves the instrument untouched; an unreachable
controller gives the loud failure line; the guardian holds no connection while its parent lives. End to end:
`hotstage run` on a visa rig served by `python -m hotstage.simulated.serve --control` in another process is SIGKILLed
mid-run and the emulator reports heater range 0 within a bounded number of polls.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hotstage.acquisition.guardian import LS336_ASRL, Guardian
from hotstage.simulated.clock import SimClock
from hotstage.simulated.lakeshore_server import LakeShore336Server
from hotstage.simulated.thermal import ClockedFurnace

# End to end (`pytest -m e2e`, run by .ci/run): the guardian process outliving a SIGKILLed command, real time.
pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
POLLS = 300
"""Bound on the polls (0.1 s apart) for the heater to be seen off: the guardian needs about one second."""


class Emulator:
    """A Lake Shore 336 emulator (furnace alone) served from a loop thread, with a raw query helper."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backend = ClockedFurnace(SimClock(10.0))
        self.server = LakeShore336Server(self.backend)
        self._run(self.server.start())

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10.0)

    @property
    def connections(self) -> int:
        return len(self.server._writers)

    def query(self, message: str) -> str:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5.0) as sock:
            sock.sendall(message.encode() + b"\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                assert chunk, "emulator closed the connection"
                buf += chunk
        return buf[:-2].decode()

    def heater_on(self) -> None:
        with self.backend.furnace() as plant:
            plant.set_setpoint(1, 80.0)
            plant.set_range(1, 3)
            plant.set_range(2, 1)

    def close(self) -> None:
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator()
    yield emu
    emu.close()


def dummy_parent(resource: str, log: Path, then: str) -> subprocess.Popen[str]:
    """A process that starts a guardian, prints its pid, then does `then` (Python statements; `g` is the guardian)."""
    code = textwrap.dedent(f"""
        import sys, time
        from hotstage.acquisition.guardian import Guardian
        g = Guardian({resource!r}, "@py", log_path={str(log)!r}).start()
        print(g.pid, flush=True)
        sys.stdin.readline()
        {then}
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc


def wait_for(predicate, polls: int = POLLS, every_s: float = 0.1) -> bool:
    """True as soon as `predicate()` holds, False after `polls` polls."""
    for _ in range(polls):
        if predicate():
            return True
        time.sleep(every_s)
    return False


def log_text(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def test_parent_killed_guardian_switches_both_heater_outputs_off(emulator: Emulator, tmp_path: Path) -> None:
    log = tmp_path / "guardian.log"
    emulator.heater_on()
    parent = dummy_parent(emulator.server.resource, log, "time.sleep(600)")
    try:
        guardian_pid = int(parent.stdout.readline())
        assert guardian_pid > 0
        assert emulator.query("RANGE? 1;RANGE? 2") == "3;1"
        # the guardian holds no connection while its parent lives (the query's own closes asynchronously)
        assert wait_for(lambda: emulator.connections == 0)
        parent.kill()  # SIGKILL: no cleanup of any kind in the parent
        parent.wait(10)
        assert wait_for(lambda: emulator.query("RANGE? 1;RANGE? 2") == "0;0")
        assert wait_for(lambda: "switched OFF" in log_text(log))
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        parent.stdin.close()
    line = log_text(log)
    assert f"heater outputs 1, 2 switched OFF on {emulator.server.resource} (RANGE? reads 0)" in line
    assert "died without switching the furnace off" in line


def test_a_parent_that_closes_safely_leaves_the_instrument_alone(emulator: Emulator, tmp_path: Path) -> None:
    log = tmp_path / "guardian.log"
    emulator.heater_on()  # on, so that a guardian that acted anyway would show
    parent = dummy_parent(emulator.server.resource, log, "print(g.release(safe=True), flush=True)")
    try:
        parent.stdout.readline()
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "0"  # the guardian's exit status
        assert parent.wait(30) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        parent.stdin.close()
    assert "closed with the heater off; nothing to do" in log_text(log)
    assert emulator.query("RANGE? 1;RANGE? 2") == "3;1"


def test_unreachable_controller_gives_one_loud_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    resource = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    log = tmp_path / "guardian.log"
    done = subprocess.run(
        [sys.executable, "-m", "hotstage.acquisition.guardian", "--resource", resource, "--log", str(log),
         "--connect-window", "0.5"],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout.strip() == "ready"
    loud = [line for line in done.stderr.splitlines() if "hotstage guardian" in line]
    assert len(loud) == 1 and f"could NOT be switched off on {resource}" in loud[0]
    assert "SWITCH THE HEATER OFF AT THE CONTROLLER NOW" in loud[0]
    assert loud[0] in log_text(log)


def test_guardian_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    from hotstage.acquisition.guardian import GuardianError

    g = Guardian("TCPIP0::127.0.0.1::1::SOCKET", "no-such-visa-library.so", log_path=tmp_path / "g.log")
    with pytest.raises(GuardianError, match="did not start"):
        g.start()
    assert g.pid is None


def test_serial_settings_match_the_device() -> None:
    from hotstage.devices.lakeshore import LS336_SERIAL

    assert LS336_SERIAL["baud_rate"] == LS336_ASRL["baud_rate"]
    assert LS336_SERIAL["data_bits"] == LS336_ASRL["data_bits"]
    assert LS336_SERIAL["parity"].name == LS336_ASRL["parity"]
    assert LS336_SERIAL["stop_bits"].name == LS336_ASRL["stop_bits"]


# -------------------------------------------------------------------------------------- end to end
def _call(port: int, request: dict) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        f = sock.makefile("rw")
        f.write(json.dumps(request) + "\n")
        f.flush()
        return json.loads(f.readline())


def test_sigkill_of_a_running_session_leaves_the_heater_off(tmp_path: Path) -> None:
    serve = subprocess.Popen([sys.executable, "-m", "hotstage.simulated.serve", "--time-scale", "20", "--control"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    run: subprocess.Popen[str] | None = None
    try:
        info = json.loads(serve.stdout.readline())
        control = info["control"]

        def truth() -> dict:
            return _call(control, {"op": "truth"})["truth"]

        rig = tmp_path / "rig.toml"
        rig.write_text(textwrap.dedent(f"""
            [rig]
            name = "guardian-test"
            kind = "visa"
            visa_library = "@py"
            [furnace]
            resource = "{info['furnace']}"
            tolerance_C = 2.0
            settle_s = 1.0
            [xrd]
            resource = "{info['xrd']}"
            exposure_s = 0.5
            [thz]
            resource = "{info['thz']}"
            exposure_s = 0.5
            [pl]
            resource = "{info['pl']}"
            exposure_s = 0.5
        """))
        program = tmp_path / "program.toml"
        program.write_text("start_C = 25\n[[segment]]\nkind = \"ramp\"\nto_C = 300\nrate_C_per_min = 10\n")
        data = tmp_path / "data"
        stderr = tmp_path / "stderr.txt"
        with stderr.open("w") as err:
            run = subprocess.Popen(
                [sys.executable, "-m", "hotstage.acquisition.cli", "--data", str(data), "run", "--program", str(program),
                 "--rig", str(rig), "--no-analysis", "--no-progress"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True,
            )
        # mid-run: the program's ramp is under way (setpoint beyond the start temperature, heater on)
        assert wait_for(lambda: run.poll() is None and truth()["setpoint_C"] > 30.0, polls=3000), (
            run.poll(), truth())
        assert truth()["heater_range"] == 3.0
        run.kill()  # SIGKILL the acquiring process alone
        run.wait(10)
        assert wait_for(lambda: truth()["heater_range"] == 0.0)
        log = data / "guardian.log"
        assert wait_for(lambda: "switched OFF" in log_text(log))
        assert "switched OFF" in stderr.read_text()  # the loud line reached the terminal the session ran in
    finally:
        if run is not None:
            if run.poll() is None:
                run.kill()
            run.wait()
            try:  # the killed session's own children (storage writer, fork server)
                os.killpg(run.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        serve.stdout.close()


# ------------------------------------------------------------------------------ the session's wiring
def _visa_config(resource: str) -> SimpleNamespace:
    """What `arm_furnace_interlocks` reads of a RigConfig: a visa rig with only a furnace."""
    return SimpleNamespace(simulated=False, visa_library="@py", limits=SimpleNamespace(max_C=300.0),
                           instruments={"furnace": SimpleNamespace(resource=resource)})


class _Rig:
    def __init__(self, furnace) -> None:
        self.furnace = furnace


def test_session_wiring_tells_the_guardian_safe_after_a_confirmed_heater_off(emulator: Emulator,
                                                                            tmp_path: Path) -> None:
    from contextlib import ExitStack

    from hotstage.acquisition.interlocks import arm_furnace_interlocks
    from hotstage.devices.lakeshore import LakeShore336Furnace

    furnace = LakeShore336Furnace(emulator.server.resource, name="furnace", resource_manager="@py").connect()
    try:
        with ExitStack() as stack:
            guardian = arm_furnace_interlocks(stack, _visa_config(emulator.server.resource), _Rig(furnace), tmp_path)
            assert guardian is not None and guardian.pid is not None
            assert emulator.query("TLIMIT? A;TLIMIT? B") == "+0588.100;+0588.100"  # max_C 300 + 15 °C
            emulator.heater_on()
            furnace.heater_off()  # what Session._make_safe does before the guardian is released
        assert "closed with the heater off; nothing to do" in log_text(tmp_path / "guardian.log")
    finally:
        furnace.destroy()


def test_session_wiring_leaves_an_unconfirmed_heater_to_the_guardian(emulator: Emulator, tmp_path: Path) -> None:
    from contextlib import ExitStack

    from hotstage.acquisition.interlocks import arm_furnace_interlocks
    from hotstage.devices.lakeshore import LakeShore336Furnace
    from hotstage.devices.visa import InstrumentReplyError

    furnace = LakeShore336Furnace(emulator.server.resource, name="furnace", resource_manager="@py").connect()
    try:
        with ExitStack() as stack:
            arm_furnace_interlocks(stack, _visa_config(emulator.server.resource), _Rig(furnace), tmp_path)
            emulator.heater_on()

            def broken(confirm: bool = False) -> None:  # the session's link cannot confirm the heater off
                raise InstrumentReplyError("heater still on", instrument="furnace", command="RANGE 1,0",
                                           resource=emulator.server.resource)

            furnace.heater_off = broken  # type: ignore[method-assign]
    finally:
        furnace.destroy()
    assert wait_for(lambda: emulator.query("RANGE? 1;RANGE? 2") == "0;0")
    assert wait_for(lambda: "switched OFF" in log_text(tmp_path / "guardian.log"))
