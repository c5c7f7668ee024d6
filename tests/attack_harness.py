"""Attack harness: break a `hotstage run` from OUTSIDE its process and measure what is left (issue 11).

Every scenario starts the instrument emulators in their own process (`hotstage sim serve --control`), points a
VISA rig TOML at them (`kind = "visa"`, `visa_library = "@py"`), starts `hotstage run` as a user would, attacks
at a chosen moment with real means (signals, `chattr +i`, a deleted file, a 3 MB tmpfs, a killed emulator, a
fault armed through the control socket), then reads back, independently of the product:

* the heater from the emulator's plant (control socket `{"op": "truth"}`: `heater_range`);
* the acquisitions from the emulator's side (`{"op": "counts"}`: `FETC:DATA?` replies per detector);
* the events stored in the catalog (rows per stream, `seq_num` duplicates and gaps), the stop document, the
  derived run, and the exit status of the command; stdout/stderr for the loud "check the furnace by hand" line.

Timing. A visa rig runs its plan on the wall clock (`HardwareRig` has no time scale), while the emulator runs at
`EMU_TIME_SCALE`: the furnace reaches each setpoint almost at once and the cadence is in seconds (`every_s`), so
events come at a steady 1 per wall second per stream whatever the furnace does. Attacks on the acquiring process
are delivered in a *quiet window*: no acquisition in flight at the detectors (`INIT` == `FETC:DATA?` for each)
and none completed for `QUIET_S`. So every acquisition the emulator counted before the attack had time to
become an event, and "acquired before the attack" is exact: `lost` = acquired before the attack and not stored.
Acquisitions the run made after the attack may be stored or abandoned; none may be stored that the emulator
never served (`phantom`).

Standalone: ``python tests/attack_harness.py [--only NAME]`` runs every scenario and prints the table;
``tests/test_attack.py`` runs them under pytest (one test per row, asserting the issue's expected outcome) and
``tests/conftest.py`` prints the same table at the end of the session.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("hotstage")
HOTSTAGE: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "hotstage.acquisition.cli"]
"""The console script next to this interpreter (as a user runs it), else the module."""

STREAMS = ("xrd", "thz", "pl")
EMU_TIME_SCALE = 60.0
"""Emulator speed: the furnace settles in a fraction of a wall second; an overshoot recovers in about one."""
HANG_S = 180.0
"""A command still running after this long is a hang (hang detector only, never a latency assertion)."""
GUARDIAN_WAIT_S = 30.0
"""How long a killed session's heater may stay on before we call the guardian absent."""
LEFTOVER_WAIT_S = 5.0
"""How long the processes a command started may outlive it before the harness ends them (and says so)."""
QUIET_S = 0.5
"""An attack waits for this long without any acquisition (see the module doc)."""
RO_SECONDS = 10.0
"""How long the data directory stays read-only in the storage-blip row."""
DISK_MB = 3
DISK_FREE_KB = 400
"""The full-disk row leaves this much of the 3 MB tmpfs free when the run starts (a ballast file takes the rest)."""
LOUD = re.compile(r"check the furnace by hand", re.I)
TAG_ENV = "HOTSTAGE_ATTACK_TAG"
"""Set in the environment of every process a scenario starts: finds all of them again, whatever session they
put themselves in, so that none is left running."""

PROGRAM = {"start_C": 60.0, "to_C": 70.0, "rate": 100.0, "hold_min": 0.1}
"""60 °C, ramp to 70 °C at 100 °C/min (6 wall s), hold 6 s: about 12 events per 1-s stream."""
CADENCE = {"xrd": 1.0, "pl": 1.0, "thz": 2.0}
"""every_s per stream (experiment s = wall s on a visa rig)."""

EXPECTED_EXIT = {
    "SIGTERM": 143,
    "SIGHUP": 129,
    "Ctrl-C once": 130,
    "Ctrl-C twice": 130,
    "SIGKILL + spool flush": -9,
    "emulator killed": 1,
    "furnace link lost": 1,
    "data dir read-only 10 s": None,
    "catalog.db deleted": None,
    "disk full (3 MB tmpfs)": 1,
    "torn line + garbage in spool": 0,
    "overshoot suspend/resume": 0,
}
"""The exit status each row expects (a `hotstage spool flush` for the torn-spool row; SIGKILL: killed by 9).
None: the issue asks only that nothing is lost and nothing hangs, so the run may end either way, and the exit
status must say which (`hotstage run`: 0 when the run's stop is `success`, else 1)."""


class HarnessError(RuntimeError):
    """The harness itself could not set a scenario up (not a finding about hotstage)."""


# ------------------------------------------------------------------------------------------------ processes
def _clean_env(tag: str) -> dict[str, str]:
    """The user's environment without hotstage's own variables, plus the process tag."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOTSTAGE_DATA", "HOTSTAGE_SPOOL", "HOTSTAGE_TILED_URI", "TILED_API_KEY")}
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **{TAG_ENV: tag})
    return env


def tagged_pids(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``tag``."""
    needle = f"{TAG_ENV}={tag}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] != "Z":
            out.append(int(entry.name))
    return out


def end_tagged(tag: str, wait_s: float) -> list[str]:
    """Wait up to ``wait_s`` for the tagged processes to end by themselves; SIGKILL (by pid) what is left.

    Returns the command lines of the processes that had to be killed."""
    deadline = time.monotonic() + wait_s
    while tagged_pids(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for pid in tagged_pids(tag):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            os.kill(pid, signal.SIGKILL)
            killed.append(cmd[:120])
        except OSError:
            pass
    return killed


class Emulator:
    """`hotstage sim serve --control` in its own process: resources, control socket, truth, counts."""

    def __init__(self, workdir: Path, time_scale: float = EMU_TIME_SCALE) -> None:
        self.workdir = workdir
        self.time_scale = time_scale
        self.tag = uuid.uuid4().hex
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.killed = False

    def start(self, timeout: float = 120.0) -> Emulator:
        """Start the emulators and read their JSON line (resources and control port)."""
        with open(self.workdir / "emulator.err", "wb") as err:
            self.proc = subprocess.Popen(
                [*HOTSTAGE, "sim", "serve", "--time-scale", str(self.time_scale), "--control"],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                env=_clean_env(self.tag), cwd=self.workdir, start_new_session=True,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise HarnessError(f"emulator did not start: {(self.workdir / 'emulator.err').read_text()[-2000:]}")
        self.info = json.loads(line)
        return self

    @property
    def alive(self) -> bool:
        """True while the emulator process runs."""
        return self.proc is not None and self.proc.poll() is None

    def call(self, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """One control-socket request; the reply object (raises HarnessError on ``ok: false``)."""
        with socket.create_connection(("127.0.0.1", int(self.info["control"])), timeout=timeout) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = json.loads(sock.makefile("rb").readline())
        if not reply.get("ok"):
            raise HarnessError(f"control {request}: {reply}")
        return reply

    def truth(self) -> dict[str, float]:
        """The plant's ground truth (heater_range, furnace_C, setpoint_C ...)."""
        return self.call({"op": "truth"})["truth"]

    def heater_range(self) -> float | None:
        """The plant's heater range, None when the emulator is gone."""
        if not self.alive:
            return None
        try:
            return float(self.truth()["heater_range"])
        except (OSError, HarnessError, ValueError):
            return None

    def counts(self) -> dict[str, dict[str, int]]:
        """INIT and FETC:DATA? executed per detector so far."""
        return self.call({"op": "counts"})["counts"]

    def inject(self, spec: str) -> None:
        """Arm a fault (``INSTRUMENT:KIND@k=v``)."""
        self.call({"op": "inject", "spec": spec})

    def kill(self) -> None:
        """SIGKILL the emulator process (the instruments vanish mid-run)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        self.killed = True

    def stop(self) -> None:
        """SIGTERM, then make sure it and anything it started are gone."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        end_tagged(self.tag, 5.0)


def fetched(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """FETC:DATA? replies per stream (the acquisitions the emulator completed)."""
    return {s: int(counts.get(s, {}).get("FETC:DATA?", 0)) for s in STREAMS}


_SHARED: Emulator | None = None


def shared_emulator() -> Emulator:
    """One emulator process for the rows that do not kill it (started on first use, restarted if it died): saves
    a start per row. Each row clears its faults and counts from its own baseline."""
    global _SHARED
    if _SHARED is None or not _SHARED.alive:
        stop_shared()
        _SHARED = Emulator(Path(tempfile.mkdtemp(prefix="hotstage-attack-emulator-"))).start()
    return _SHARED


def stop_shared() -> None:
    """Stop the shared emulator (and remove its directory)."""
    global _SHARED
    if _SHARED is not None:
        _SHARED.stop()
        shutil.rmtree(_SHARED.workdir, ignore_errors=True)
        _SHARED = None


atexit.register(stop_shared)


class CliRun:
    """One `hotstage` command in its own process session, output to files, every descendant tagged."""

    def __init__(self, args: list[str], workdir: Path, name: str = "run", env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env or {}
        self.workdir = workdir
        self.name = name
        self.tag = uuid.uuid4().hex
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.hung = False
        self.leftovers: list[str] = []

    def start(self) -> CliRun:
        """Start the command (stdin closed, as in CI)."""
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*HOTSTAGE, *self.args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**_clean_env(self.tag), **self.env}, cwd=self.workdir, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        """True while the command runs."""
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int, group: bool = False) -> None:
        """Send ``sig`` to the command (``group``: to its whole process group, as a terminal's Ctrl-C does)."""
        if group:
            os.killpg(self.pid, sig)
        else:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = HANG_S) -> int | None:
        """Exit status (negative: killed by that signal); None when it hung (then it is killed)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.hung = True
            self.proc.kill()
            self.proc.wait(30)
            return None

    def finish(self, wait_s: float = LEFTOVER_WAIT_S) -> None:
        """End whatever the command started that outlived it (noted in ``leftovers``)."""
        if self.running():
            self.wait(0.1)
        self.leftovers = end_tagged(self.tag, wait_s)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""


def run_command(args: list[str], workdir: Path, name: str, timeout: float = HANG_S,
                env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run a `hotstage` command to its end; (exit status or None if it hung, stdout + stderr)."""
    cmd = CliRun(args, workdir, name, env).start()
    rc = cmd.wait(timeout)
    cmd.finish(5.0)
    return rc, cmd.stdout + cmd.stderr


# ------------------------------------------------------------------------------------------------ files
def write_rig(path: Path, emulator: Emulator, cadence: dict[str, float] | None = None) -> Path:
    """A visa rig TOML on the emulator's resources (settle 1 s, tolerance 2 °C, short exposures)."""
    info = emulator.info
    cad = "\n".join(f"{s} = {{ every_s = {v} }}" for s, v in (cadence or CADENCE).items())
    path.write_text(f"""\
[rig]
name = "attack-rig"
kind = "visa"
visa_library = "@py"

[limits]
max_C = 400.0
max_rate_C_per_min = 100.0

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

[cadence]
{cad}
""")
    return path


def write_program(path: Path, hold_min: float | None = None) -> Path:
    """The short program of `PROGRAM` (the hold overridable)."""
    p = dict(PROGRAM, **({} if hold_min is None else {"hold_min": hold_min}))
    path.write_text(f"""\
start_C = {p['start_C']}
[[segment]]
kind = "ramp"
to_C = {p['to_C']}
rate_C_per_min = {p['rate']}
[[segment]]
kind = "hold"
minutes = {p['hold_min']}
""")
    return path


_TEMPLATE: Path | None = None


def catalog_template() -> Path:
    """An initialised, empty embedded catalog (made once per process: `tiled catalog init` costs seconds)."""
    global _TEMPLATE
    if _TEMPLATE is None or not (_TEMPLATE / "catalog.db").exists():
        root = Path(tempfile.mkdtemp(prefix="hotstage-attack-template-"))
        code = ("import sys\nfrom hotstage.acquisition.storage import open_catalog, close_catalog\n"
                "close_catalog(open_catalog(sys.argv[1]))\n")
        done = subprocess.run([sys.executable, "-c", code, str(root / "data")], capture_output=True, text=True,
                              timeout=HANG_S, env=_clean_env("template"), cwd=REPO)
        if done.returncode != 0 or not (root / "data" / "catalog.db").exists():
            raise HarnessError(f"could not initialise a catalog: {done.stderr[-2000:]}")
        _TEMPLATE = root / "data"
    return _TEMPLATE


def new_data_dir(path: Path) -> Path:
    """A copy of the empty catalog at ``path`` (so no scenario waits for a catalog init)."""
    shutil.copytree(catalog_template(), path)
    return path


# ------------------------------------------------------------------------------------------------ reading back
@dataclass
class RunRecord:
    """One run as stored in the catalog."""

    uid: str
    start: dict[str, Any]
    stop: dict[str, Any] | None
    rows: dict[str, int]
    duplicated: int
    gaps: int


def read_catalog(data_dir: Path) -> list[RunRecord]:
    """Every run in the embedded catalog under ``data_dir``: rows per stream, repeated and missing seq_nums."""
    from hotstage.acquisition.storage import close_catalog, open_catalog

    if not (data_dir / "catalog.db").exists():
        return []
    client = open_catalog(data_dir)
    try:
        records = []
        for uid in list(client):
            run = client[uid]
            md = run.metadata
            rows = {}
            for stream in run:
                rows[stream] = int(run[stream].read().sizes.get("time", 0))
            seqs: dict[str, Counter[int]] = {}
            names: dict[str, str] = {}
            for name, doc in run.documents():
                if name == "descriptor":
                    names[doc["uid"]] = doc.get("name", "primary")
                elif name == "event":
                    seqs.setdefault(names.get(doc["descriptor"], "?"), Counter())[int(doc["seq_num"])] += 1
                elif name == "event_page":
                    for s in doc["seq_num"]:
                        seqs.setdefault(names.get(doc["descriptor"], "?"), Counter())[int(s)] += 1
            duplicated = sum(n - 1 for c in seqs.values() for n in c.values())
            gaps = sum(max(c) - len(c) for c in seqs.values() if c)
            records.append(RunRecord(uid, dict(md.get("start") or {}), dict(md["stop"]) if md.get("stop") else None,
                                     rows, duplicated, gaps))
        return records
    finally:
        close_catalog(client)


def spool_files(data_dir: Path) -> list[Path]:
    """Run files left in the spool (``DATA/spool/*.jsonl``)."""
    d = data_dir / "spool"
    return sorted(d.glob("*.jsonl")) if d.is_dir() else []


# ------------------------------------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    """What one attack left behind, measured from outside."""

    fault: str
    mechanism: str = ""
    exit_expected: int | None = None
    exit_actual: int | None = None
    hung: bool = False
    heater_range: float | None = None
    loud: int = 0
    acquired: dict[str, int] = field(default_factory=dict)
    """FETC:DATA? served per stream, at the end (or when the emulator was killed)."""
    before: dict[str, int] = field(default_factory=dict)
    """FETC:DATA? served per stream when the attack began (everything for the storage rows)."""
    runs: list[RunRecord] = field(default_factory=list)
    derived: list[RunRecord] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    flush_rc: int | None = None
    flush_output: str = ""
    notes: list[str] = field(default_factory=list)
    data: Path | None = None
    """The data directory of the run."""
    whole_run: bool = False
    """Storage rows: every acquisition of the run counts, not only those before the attack."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Row-specific findings (e.g. where the spool's garbage went)."""
    timing: dict[str, float] = field(default_factory=dict)
    """Wall seconds since the scenario began, per phase (where the suite's time goes)."""
    t0: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        """Note the wall time of a phase."""
        self.timing[phase] = round(time.monotonic() - self.t0, 1)

    @property
    def raw(self) -> RunRecord | None:
        """The one raw run (None if the catalog has none)."""
        return self.runs[0] if self.runs else None

    @property
    def stored(self) -> dict[str, int]:
        """Rows per stream in the catalog (the raw run)."""
        return {s: (self.raw.rows.get(s, 0) if self.raw else 0) for s in STREAMS}

    @property
    def abandoned(self) -> dict[str, int]:
        """Per stream, the one acquisition a run that hotstage itself stopped (full disk ...) may have had in
        flight: served by the detector, never an event (the stop document's counts equal the stored rows)."""
        stop = self.stop
        if not self.whole_run or stop is None or stop.get("exit_status") == "success":
            return {}
        counts = stop.get("num_events") or {}
        return {s: 1 for s in STREAMS
                if self.before.get(s, 0) > self.stored[s] and counts.get(s, 0) == self.stored[s]}

    @property
    def lost(self) -> int:
        """Acquired before the attack (whole run: at all) but not stored, plus seq_num gaps in what is stored."""
        missing = sum(max(0, self.before.get(s, 0) - self.stored[s] - self.abandoned.get(s, 0)) for s in STREAMS)
        return missing + (self.raw.gaps if self.raw else 0)

    @property
    def phantom(self) -> int:
        """Rows stored beyond what the emulator ever served."""
        return sum(max(0, self.stored[s] - self.acquired.get(s, 0)) for s in STREAMS)

    @property
    def duplicated(self) -> int:
        """Repeated seq_nums, raw run."""
        return self.raw.duplicated if self.raw else 0

    @property
    def stop(self) -> dict[str, Any] | None:
        """The raw run's stop document."""
        return self.raw.stop if self.raw else None

    @property
    def traceback(self) -> bool:
        """A Python traceback on the command's output."""
        return "Traceback (most recent call last)" in self.stderr + self.stdout

    def row(self) -> list[str]:
        """This outcome as a table row (see `TABLE_HEADER`)."""
        heater = ("n/a (spool only)" if self.extra.get("spool_only") else "n/a (emulator gone)"
                  if self.heater_range is None else f"{self.heater_range:g}")
        stop = self.stop["exit_status"] if self.stop else "none"
        actual = "hung" if self.hung else str(self.exit_actual)
        notes = list(self.notes)
        if self.traceback:
            notes.append("traceback")
        if self.abandoned:
            notes.append(f"in flight when the run stopped, not events: {self.abandoned}")
        if self.phantom:
            notes.append(f"{self.phantom} stored beyond the emulator's count")
        return [self.fault, heater, "y" if self.loud else "n", str(sum(self.acquired.values())),
                str(sum(self.stored.values())), str(self.lost), str(self.duplicated), stop,
                f"{self.exit_expected}/{actual}", "; ".join([self.mechanism, *notes]).strip("; ")]


TABLE_HEADER = ["fault", "heater range (emulator)", "loud line", "acquired", "stored", "lost", "duplicated",
                "stop doc", "exit exp/act", "notes"]
ROWS: list[Outcome] = []
"""Every outcome of this process, in order (the table)."""


def format_table(outcomes: list[Outcome]) -> str:
    """The attack table as aligned text."""
    rows = [TABLE_HEADER, *[o.row() for o in outcomes]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER) - 1)]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if k == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 5))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ scenarios
@dataclass
class Attack:
    """What a scenario's attack sees: the emulator, the running command, the data directory, the workdir."""

    emulator: Emulator
    run: CliRun
    data: Path
    workdir: Path
    outcome: Outcome
    base: dict[str, int] = field(default_factory=dict)
    """FETC:DATA? per stream before the run (a shared emulator counts across rows)."""

    def acquired(self, counts: dict[str, dict[str, int]] | None = None) -> dict[str, int]:
        """FETC:DATA? per stream served to this row's run (from ``counts``, else asked now)."""
        now = fetched(self.emulator.counts() if counts is None else counts)
        return {s: now[s] - self.base.get(s, 0) for s in STREAMS}

    def quiet_window(self, min_events: int = 3, timeout: float = HANG_S) -> dict[str, int]:
        """Wait for ``min_events`` XRD acquisitions, then for no acquisition in flight and none for QUIET_S.

        Returns FETC:DATA? per stream at that moment (the attack should follow at once)."""
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, int]] | None = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            if not self.run.running():
                raise HarnessError(f"{self.outcome.fault}: the run ended before the attack "
                                   f"(exit {self.run.proc.returncode}): {self.run.stderr[-1500:]}")
            counts = self.emulator.counts()
            now = time.monotonic()
            got = self.acquired(counts)
            if got["xrd"] and "first event" not in self.outcome.timing:
                self.outcome.mark("first event")
            if counts != last:
                last, since = counts, now
            idle = all(counts.get(s, {}).get("INIT", 0) == counts.get(s, {}).get("FETC:DATA?", 0) for s in STREAMS)
            if idle and got["xrd"] >= min_events and now - since >= QUIET_S:
                return got
            time.sleep(0.05)
        raise HarnessError(f"{self.outcome.fault}: no quiet window within {timeout} s")


def scenario(
    fault: str,
    attack: Callable[[Attack], None],
    workdir: Path,
    *,
    analysis: bool = False,
    hold_min: float | None = None,
    mechanism: str = "",
    data_dir: Path | None = None,
    whole_run: bool = False,
    after: Callable[[Attack], None] | None = None,
    own_emulator: bool = False,
) -> Outcome:
    """Run one attack: emulator, `hotstage run`, ``attack`` (in a quiet window), then measure everything.

    ``whole_run``: the acquisition is not what is attacked (storage rows): everything the emulator served must be
    stored, not only what came before the attack. ``after`` runs once the command has ended (e.g. a spool flush)
    and before the catalog is read. ``own_emulator``: a fresh emulator process for this row (one the attack
    kills), else the shared one."""
    workdir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(fault, mechanism=mechanism, exit_expected=EXPECTED_EXIT.get(fault), whole_run=whole_run)
    emu = Emulator(workdir).start() if own_emulator else shared_emulator()
    emu.call({"op": "clear"})
    base = fetched(emu.counts())
    outcome.mark("emulator ready")
    run: CliRun | None = None
    try:
        data = outcome.data = new_data_dir(data_dir or workdir / "data")
        rig = write_rig(workdir / "rig.toml", emu)
        program = write_program(workdir / "program.toml", hold_min)
        args = ["--data", str(data), "run", "--program", str(program), "--rig", str(rig), "--no-progress"]
        run = CliRun(args if analysis else [*args, "--no-analysis"], workdir).start()
        ctx = Attack(emu, run, data, workdir, outcome, base)
        attack(ctx)
        outcome.mark("attack")
        outcome.exit_actual = run.wait(HANG_S)
        outcome.mark("exit")
        outcome.hung = run.hung
        outcome.heater_range = emu.heater_range()
        if emu.alive:
            outcome.acquired = ctx.acquired()
        elif not outcome.acquired:
            outcome.acquired = dict(outcome.before)
        if whole_run:
            outcome.before = dict(outcome.acquired)
        run.finish()
        outcome.mark("children gone")
        if run.leftovers:
            outcome.notes.append(f"{len(run.leftovers)} process(es) outlived the command: {run.leftovers}")
        outcome.stdout, outcome.stderr = run.stdout, run.stderr
        if after is not None:
            after(ctx)
        outcome.loud = len([ln for ln in (outcome.stdout + outcome.stderr + outcome.flush_output).splitlines()
                            if LOUD.search(ln)])
        outcome.mark("after")
        records = read_catalog(data)
        outcome.mark("catalog read")
        outcome.runs = [r for r in records if "derived_from" not in r.start]
        outcome.derived = [r for r in records if "derived_from" in r.start]
        if outcome.exit_expected is None:
            outcome.exit_expected = 0 if outcome.stop and outcome.stop.get("exit_status") == "success" else 1
            outcome.notes.append("expected exit from the stop document")
        if len(outcome.runs) != 1:
            outcome.notes.append(f"{len(outcome.runs)} raw runs in the catalog")
        left = spool_files(data)
        if left:
            outcome.notes.append(f"{len(left)} file(s) still in the spool")
        return outcome
    except BaseException as exc:
        outcome.notes.append(f"harness stopped: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    finally:
        if run is not None and run.running():
            run.wait(0.1)
        if run is not None:
            run.finish(0.0)
        if own_emulator:
            emu.stop()
        elif emu.alive:
            emu.call({"op": "clear"})
        for rescue in outcome.extra.get("rescue_spools", []):
            shutil.rmtree(rescue, ignore_errors=True)
        ROWS.append(outcome)


def signal_attack(sig: int, *, group: bool = False, twice: bool = False) -> Callable[[Attack], None]:
    """Send ``sig`` in a quiet window (``group``: to the process group, as a terminal does; ``twice``: 0.1 s apart)."""

    def attack(a: Attack) -> None:
        a.outcome.before = a.quiet_window()
        a.run.send(sig, group)
        if twice:
            time.sleep(0.1)
            if a.run.running():
                a.run.send(sig, group)
    return attack


def sigterm(workdir: Path) -> Outcome:
    """SIGTERM to the acquiring process."""
    return scenario("SIGTERM", signal_attack(signal.SIGTERM), workdir, mechanism="kill -TERM pid")


def sighup(workdir: Path) -> Outcome:
    """SIGHUP to the acquiring process."""
    return scenario("SIGHUP", signal_attack(signal.SIGHUP), workdir, mechanism="kill -HUP pid")


def ctrl_c_once(workdir: Path) -> Outcome:
    """One SIGINT to the foreground process group (what a terminal's Ctrl-C does)."""
    return scenario("Ctrl-C once", signal_attack(signal.SIGINT, group=True), workdir,
                    mechanism="SIGINT to the process group")


def ctrl_c_twice(workdir: Path) -> Outcome:
    """Two SIGINTs 0.1 s apart to the process group, with the live analysis on (its derived run is checked)."""
    return scenario("Ctrl-C twice", signal_attack(signal.SIGINT, group=True, twice=True), workdir, analysis=True,
                    mechanism="2x SIGINT to the process group, 0.1 s apart; live analysis on")


def sigkill(workdir: Path) -> Outcome:
    """SIGKILL to the acquiring process; the guardian must switch the heater off; `hotstage spool flush` recovers."""

    def attack(a: Attack) -> None:
        a.outcome.before = a.quiet_window()
        a.run.send(signal.SIGKILL)
        a.run.wait(30)
        deadline = time.monotonic() + GUARDIAN_WAIT_S
        while time.monotonic() < deadline and a.emulator.heater_range() not in (0.0, None):
            time.sleep(0.2)

    def flush(a: Attack) -> None:
        keep = a.workdir / "spool-after-kill"
        if (a.data / "spool").is_dir():
            shutil.copytree(a.data / "spool", keep)  # for the torn-spool row
        a.outcome.notes.append(f"{len(spool_files(a.data))} spool file(s) after the kill")
        a.outcome.flush_rc, a.outcome.flush_output = run_command(["--data", str(a.data), "spool", "flush"],
                                                                 a.workdir, "flush")
        a.outcome.notes.append(f"spool flush exit {a.outcome.flush_rc}")

    return scenario("SIGKILL + spool flush", attack, workdir, mechanism="kill -KILL pid", after=flush)


def emulator_killed(workdir: Path) -> Outcome:
    """The emulator process (all four instruments) SIGKILLed mid-run."""

    def attack(a: Attack) -> None:
        a.outcome.before = a.quiet_window()
        a.outcome.acquired = dict(a.outcome.before)
        a.emulator.kill()

    return scenario("emulator killed", attack, workdir, mechanism="kill -KILL emulator pid", own_emulator=True)


def furnace_link_lost(workdir: Path) -> Outcome:
    """Every message to the furnace resets the connection from mid-run on (persistent connection loss)."""

    def attack(a: Attack) -> None:
        a.outcome.before = a.quiet_window()
        a.emulator.inject("furnace:drop_connection@count=inf")

    return scenario("furnace link lost", attack, workdir, mechanism="furnace:drop_connection@count=inf")


# --- storage ----------------------------------------------------------------------------------------------
def _probe(cmds: list[list[str]], undo: list[list[str]], target: Path) -> bool:
    """True when ``cmds`` succeed on ``target`` and actually stop a write there (then ``undo`` them)."""
    ok = all(subprocess.run(c, capture_output=True).returncode == 0 for c in cmds)
    try:
        if ok:
            try:
                (target / "probe").write_text("x")
                ok = False  # the write went through: no protection
            except OSError:
                pass
    finally:
        for c in undo:
            subprocess.run(c, capture_output=True)
    return ok


def read_only_mechanism(workdir: Path) -> str:
    """How to make a directory read-only here: "chattr" (+i, ext4/xfs), "bind-ro" (a read-only bind mount over
    it), "chmod" (not root), or "" (none works here)."""
    probe = workdir / "ro-probe"
    probe.mkdir(parents=True, exist_ok=True)
    if shutil.which("chattr") and _probe([["chattr", "+i", str(probe)]], [["chattr", "-i", str(probe)]], probe):
        return "chattr"
    if shutil.which("mount") and _probe(
        [["mount", "--bind", str(probe), str(probe)], ["mount", "-o", "remount,bind,ro", str(probe)]],
        [["umount", str(probe)]], probe,
    ):
        return "bind-ro"
    if os.geteuid() != 0:
        return "chmod"
    return ""


@contextmanager
def read_only(directory: Path, mechanism: str) -> Iterator[None]:
    """``directory`` (and everything in it) read-only inside the block."""
    if mechanism == "chattr":
        on, off = [["chattr", "-R", "+i", str(directory)]], [["chattr", "-R", "-i", str(directory)]]
    elif mechanism == "bind-ro":
        on = [["mount", "--bind", str(directory), str(directory)],
              ["mount", "-o", "remount,bind,ro", str(directory)]]
        off = [["umount", "-l", str(directory)]]
    elif mechanism == "chmod":
        on, off = [["chmod", "-R", "a-w", str(directory)]], [["chmod", "-R", "u+w", str(directory)]]
    else:
        raise HarnessError("no read-only mechanism here")
    try:
        for c in on:
            subprocess.run(c, check=True, capture_output=True)
        yield
    finally:
        for c in off:
            subprocess.run(c, capture_output=True)


def data_read_only(workdir: Path) -> Outcome:
    """The data directory read-only for RO_SECONDS mid-run, then writable again; nothing lost, no hang."""
    mechanism = read_only_mechanism(workdir)
    label = {"chattr": "chattr -R +i", "bind-ro": "read-only bind mount (chattr not available here)",
             "chmod": "chmod -R a-w (not root)", "": "not available here"}[mechanism]

    def attack(a: Attack) -> None:
        a.quiet_window()
        if not mechanism:
            return
        with read_only(a.data, mechanism):
            deadline = time.monotonic() + RO_SECONDS
            while time.monotonic() < deadline and a.run.running():
                time.sleep(0.1)

    return scenario("data dir read-only 10 s", attack, workdir, hold_min=0.35, whole_run=True, mechanism=label,
                    after=_flush_if_spooled)


RESCUE = re.compile(r"HOTSTAGE_SPOOL=(\S+) hotstage spool flush")
"""How a session names a spool it had to put elsewhere (its own data directory could not take it)."""


def _flush_if_spooled(a: Attack) -> None:
    """The issue allows "after `hotstage spool flush`": flush when the session left files in the spool, and
    flush every other spool the session's output tells the user to flush (as a user would)."""
    rescues = sorted(set(RESCUE.findall(a.outcome.stdout + a.outcome.stderr)))
    a.outcome.extra["rescue_spools"] = [r for r in rescues if Path(r).name.startswith("hotstage-rescue")]
    for k, directory in enumerate([None, *rescues]):
        if directory is None and not spool_files(a.data):
            continue
        env = {"HOTSTAGE_SPOOL": directory} if directory else None
        rc, out = run_command(["--data", str(a.data), "spool", "flush"], a.workdir, f"flush{k}", env=env)
        a.outcome.flush_rc = rc if a.outcome.flush_rc in (None, 0) else a.outcome.flush_rc
        a.outcome.flush_output += out
        a.outcome.notes.append(f"spool flush{' of ' + directory if directory else ''} needed (exit {rc})")


def catalog_deleted(workdir: Path) -> Outcome:
    """`catalog.db` removed from the data directory mid-run."""

    def attack(a: Attack) -> None:
        a.quiet_window()
        (a.data / "catalog.db").unlink()

    return scenario("catalog.db deleted", attack, workdir, whole_run=True, mechanism="rm DATA/catalog.db",
                    after=_flush_if_spooled)


def tmpfs_available(workdir: Path) -> bool:
    """True when a tmpfs can be mounted here (root in a sandbox that allows it)."""
    probe = workdir / "tmpfs-probe"
    probe.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0 if shutil.which("mount") else False
    if ok:
        subprocess.run(["umount", str(probe)], capture_output=True)
    return ok


def disk_full(workdir: Path) -> Outcome:
    """The data directory on a 3 MB tmpfs with DISK_FREE_KB left: it fills up mid-run.

    Expected: the run stops acquiring with the heater off; once space is back (the ballast removed),
    `hotstage spool flush` stores everything acquired. Without tmpfs mounts: a per-file size limit
    (RLIMIT_FSIZE, SIGXFSZ ignored) stands in for the full disk, and the row says so."""
    disk = workdir / "disk"
    disk.mkdir(parents=True, exist_ok=True)
    mounted = tmpfs_available(workdir) and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)], capture_output=True).returncode == 0
    ballast = disk / "ballast"

    def attack(a: Attack) -> None:
        a.quiet_window(min_events=1)

    def recover(a: Attack) -> None:
        ballast.unlink(missing_ok=True)
        _flush_if_spooled(a)

    try:
        data = disk / "data"
        if mounted:
            new_data_dir(data)
            free = shutil.disk_usage(disk).free
            with open(ballast, "wb") as f:
                f.write(b"\0" * max(0, free - DISK_FREE_KB * 1024))
            shutil.rmtree(data)  # `scenario` copies the catalog in again
            mechanism = f"tmpfs size={DISK_MB}m, {DISK_FREE_KB} kB free at start"
        else:
            mechanism = "not available here: tmpfs mount refused"
        return scenario("disk full (3 MB tmpfs)", attack, workdir, data_dir=data, whole_run=True, hold_min=0.2,
                        mechanism=mechanism, after=recover)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def torn_spool(workdir: Path, spool: Path, acquired: dict[str, int]) -> Outcome:
    """The spool a SIGKILLed run left, with its last line torn and a garbage file beside it: `spool flush`
    stores the run (nothing lost, nothing twice) and moves the garbage aside (kept, no longer pending)."""
    workdir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome("torn line + garbage in spool", mechanism="last line cut in half; <uuid>.jsonl of junk",
                      exit_expected=EXPECTED_EXIT["torn line + garbage in spool"])
    try:
        data = outcome.data = new_data_dir(workdir / "data")
        shutil.copytree(spool, data / "spool", dirs_exist_ok=True)
        files = spool_files(data)
        if not files:
            raise HarnessError("the killed run left no spool file to tear")
        run_file = max(files, key=lambda p: p.stat().st_size)
        lines = run_file.read_bytes().splitlines(keepends=True)
        events = [ln for ln in lines if ln.startswith(b'["event"')]
        with open(run_file, "ab") as f:
            f.write(events[-1][: len(events[-1]) // 2])  # a copy of an event line, cut: the torn write of a crash
        junk = os.urandom(3000) + b"\n{not json\n"
        garbage = data / "spool" / f"{uuid.uuid4()}.jsonl"
        garbage.write_bytes(junk)
        outcome.acquired = dict(acquired)
        outcome.before = dict(acquired)
        outcome.flush_rc, out = run_command(["--data", str(data), "spool", "flush"], workdir, "flush")
        outcome.exit_actual = outcome.flush_rc
        outcome.flush_output = outcome.stdout = out
        kept = [p for p in (data / "spool").rglob("*") if p.is_file() and p.read_bytes() == junk]
        outcome.notes.append("garbage kept aside" if kept and garbage not in spool_files(data) else
                             "garbage still pending" if garbage in spool_files(data) else "garbage gone (deleted)")
        records = read_catalog(data)
        outcome.runs = [r for r in records if "derived_from" not in r.start]
        outcome.extra["spool_only"] = True
        outcome.extra.update(garbage_kept=bool(kept), garbage_pending=garbage in spool_files(data))
        return outcome
    finally:
        ROWS.append(outcome)


def overshoot(workdir: Path) -> Outcome:
    """The furnace overshoots (heater forced to 100 % for 20 simulated s) mid-run: the run suspends and resumes;
    no seq_num twice, the stop document's counts equal the stored rows."""

    def attack(a: Attack) -> None:
        a.outcome.before = a.quiet_window()
        a.emulator.inject("furnace:overshoot@duration=20")

    def suspensions(a: Attack) -> None:
        n = len(re.findall(r"suspend", a.outcome.stderr, re.I))
        a.outcome.notes.append(f"{n} 'suspend' line(s) on stderr")

    return scenario("overshoot suspend/resume", attack, workdir, hold_min=0.3, whole_run=False,
                    mechanism="furnace:overshoot@duration=20 (sim s)", after=suspensions)


SCENARIOS: dict[str, Callable[[Path], Outcome]] = {
    "sigterm": sigterm,
    "sighup": sighup,
    "ctrl_c_once": ctrl_c_once,
    "ctrl_c_twice": ctrl_c_twice,
    "sigkill": sigkill,
    "emulator_killed": emulator_killed,
    "furnace_link_lost": furnace_link_lost,
    "data_read_only": data_read_only,
    "catalog_deleted": catalog_deleted,
    "disk_full": disk_full,
    "overshoot": overshoot,
}


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios (all, or ``--only NAME`` repeated) in a temporary directory and print the table."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", choices=[*SCENARIOS, "torn_spool"], help="run only these rows")
    p.add_argument("--keep", action="store_true", help="keep the working directory (printed)")
    args = p.parse_args(argv)
    names = args.only or [*SCENARIOS, "torn_spool"]
    root = Path(tempfile.mkdtemp(prefix="hotstage-attack-"))
    try:
        for name in names:
            if name == "torn_spool":
                killed = next((o for o in ROWS if o.fault.startswith("SIGKILL")), None) or sigkill(root / "sigkill")
                torn_spool(root / name, root / "sigkill" / "spool-after-kill", killed.before)
            else:
                SCENARIOS[name](root / name)
            print(format_table(ROWS[-1:]).splitlines()[-1], ROWS[-1].timing, flush=True)
    finally:
        stop_shared()
        print("\n" + format_table(ROWS))
        if args.keep:
            print(f"work directory: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
