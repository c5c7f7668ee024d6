"""hotstage under bluesky-queueserver: the session the RE worker opens, and `hotstage qserver`.

bluesky-queueserver runs plans the way beamlines operate: a RE Manager (`start-re-manager`) keeps a queue in Redis
and runs it in a worker process whose namespace is loaded from a startup profile. hotstage ships that profile,
`hotstage.acquisition.qserver_profile`: importing it in the worker (when a client sends `environment_open`) opens
one hotstage `Session` — the rig (the simulated one, or the rig TOML named by `$HOTSTAGE_QSERVER_RIG`), the
catalog writer, the live analysis, the furnace interlocks and suspenders — and puts its RunEngine (`RE`), its
devices (`furnace`, `xrd`, `thz`, `pl`, `clock`) and the user plans in the namespace. The queue server lists the
plans allowed by `qserver_permissions.yaml` (an explicit allow-list: the hotstage plans and a few bluesky plans,
none of the helper generators).

`QueueSession` is the glue: it opens and closes the Session, fills in what the rig knows (limits, clock, ground
truth, default cadences, the sample-change hook), and gives the worker a RunEngine that waits for the live analysis
and flushes storage after every plan (`DrainingRunEngine`), so an item the queue reports completed is stored, raw
and derived. The session is closed — heater off and confirmed, analysis drained, writer closed — when the environment
is closed, before the worker tells the manager it is closing (so the manager waits for it; with a worker that lacks
that hook, when the worker process ends: `multiprocessing.util.Finalize`; `atexit` outside one). A worker that is killed (`environment_destroy`) cannot close anything: the safety design
covers that case as for any killed process (TLIMIT and the guardian on a VISA rig; the spool keeps what was not
stored, and the next session writes it).

`hotstage qserver` checks Redis and `start-re-manager`, then runs the manager with this profile in a process
group of its own; Ctrl-C or SIGTERM closes the environment (so the session closes safely) before stopping it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROFILE_MODULE = "hotstage.acquisition.qserver_profile"
"""The startup module the RE worker imports (`start-re-manager --startup-module`)."""
PERMISSIONS_FILE = Path(__file__).with_name("qserver_permissions.yaml")
"""User group permissions shipped with the package: the plans and devices the queue server offers."""
RIG_ENV = "HOTSTAGE_QSERVER_RIG"
"""Rig TOML for the worker's session (unset: the simulated rig)."""
SAMPLE_ENV = "HOTSTAGE_QSERVER_SAMPLE"
"""Sample TOML for the simulated rig (unset: the default composite)."""
DATA_ENV = "HOTSTAGE_QSERVER_DATA"
"""The worker session's data directory, from `hotstage qserver --data` (unset: `open_catalog`'s own precedence,
`$HOTSTAGE_TILED_URI` or `$HOTSTAGE_DATA` or ./hotstage-data)."""
ANALYSIS_ENV = "HOTSTAGE_QSERVER_ANALYSIS"
"""`0` turns the live analysis off in the worker's session (default on)."""
DEFAULT_REDIS = "127.0.0.1:6379"
DEFAULT_ZMQ_CONTROL = "tcp://127.0.0.1:60615"
DEFAULT_ZMQ_INFO = "tcp://127.0.0.1:60625"
STOP_TIMEOUT_S = 120.0
"""How long Ctrl-C/SIGTERM waits for a running plan to abort and the environment to close before stopping anyway."""


# -- the worker side ---------------------------------------------------------------------------------------------
class DrainingRunEngine:
    """The session's RunEngine as the queue server's worker uses it.

    Every call that runs a plan to an end (`RE(plan)`, `resume`, `stop`, `abort`, `halt`) waits for the live
    analysis to catch up and flushes the catalog writer afterwards, as `Session` does for its own plans; everything
    else is the RunEngine's own attribute."""

    def __init__(self, session: Any) -> None:
        object.__setattr__(self, "_session", session)

    @property
    def engine(self) -> Any:
        """The bluesky RunEngine behind this one."""
        return self._session.RE

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session.RE, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._session.RE, name, value)

    def _drained(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        finally:
            self._session.wait_for_analysis()
            if self._session.writer is not None:
                self._session.writer.flush()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._drained(lambda: self._session.RE(*args, **kwargs))

    def resume(self) -> Any:
        return self._drained(self._session.RE.resume)

    def stop(self) -> Any:
        return self._drained(self._session.RE.stop)

    def abort(self, reason: str = "") -> Any:
        return self._drained(lambda: self._session.RE.abort(reason))

    def halt(self) -> Any:
        return self._drained(self._session.RE.halt)


class QueueSession:
    """One hotstage Session for the queue server's worker, configured from the environment (see module doc)."""

    def __init__(self, rig_toml: str | None = None, sample_toml: str | None = None, data_dir: str | None = None,
                 analysis: bool = True) -> None:
        from hotstage.acquisition.config import RigConfig
        from hotstage.acquisition.session import Session
        from hotstage.simulated.parameters import SampleSpec, load_sample

        self.config = RigConfig.from_toml(rig_toml) if rig_toml else RigConfig()
        sample = load_sample(sample_toml) if sample_toml else SampleSpec.default()
        self.session = Session(rig=self.config, sample=sample, data_dir=data_dir, progress=False, analysis=analysis)
        self.RE: DrainingRunEngine | None = None
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> QueueSession:
        """Rig, sample, data directory and analysis from `$HOTSTAGE_QSERVER_RIG`, `..._SAMPLE`, `..._DATA`, `..._ANALYSIS`."""
        return cls(os.environ.get(RIG_ENV) or None, os.environ.get(SAMPLE_ENV) or None,
                   os.environ.get(DATA_ENV) or None, analysis=os.environ.get(ANALYSIS_ENV, "1").strip() != "0")

    def open(self) -> QueueSession:
        """Open the session (rig first, storage before any plan) and arrange for it to close with the process."""
        self.session.__enter__()
        self.RE = DrainingRunEngine(self.session)
        import multiprocessing
        import multiprocessing.util

        worker = multiprocessing.current_process()
        shutdown_code = getattr(worker, "_worker_shutdown_code", None)
        if callable(shutdown_code):
            # bluesky-queueserver's RE worker (RunEngineWorker.run): once its loop ends (environment_close) it reports
            # 'closing' to the manager, which joins the process 0.5 s after. Closing the session first keeps the
            # worker 'closing' until the heater is off and storage is flushed (an internal hook, hence the fallbacks).
            def close_then_shut_down() -> None:
                try:
                    self.close()
                finally:
                    shutdown_code()

            worker._worker_shutdown_code = close_then_shut_down  # type: ignore[attr-defined]
        if multiprocessing.parent_process() is not None:
            # a multiprocessing child leaves through os._exit, which skips atexit, but runs these finalizers first
            # (BaseProcess._bootstrap → util._exit_function)
            multiprocessing.util.Finalize(self, QueueSession.close, args=(self,), exitpriority=100)
        atexit.register(self.close)
        print(f"hotstage: queue server session open (rig {self.config.source}, catalog "
              f"{getattr(self.session, 'data_dir', None) or 'default'})", flush=True)
        return self

    def close(self) -> None:
        """Close the session once: a paused run aborted, heater off (confirmed), analysis and writer drained."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.session.__exit__(None, None, None)
        heater = {True: "heater off (confirmed)", False: "heater NOT confirmed off: check the furnace",
                  None: "no rig"}[self.session.heater_off]
        stored = {True: "every document stored", False: "documents left in the spool (hotstage spool flush)",
                  None: "no storage"}[self.session.stored]
        # the worker's stdout is the manager's console output (its log and the console monitor)
        print(f"hotstage: queue server session closed: {heater}, {stored}", flush=True)

    # -- what the user plans need from the rig ----------------------------------------------------------------
    @property
    def rig(self) -> Any:
        """The open rig (`furnace`, `xrd`, `thz`, `pl`, `clock`)."""
        return self.session.rig

    def cadences(self, detectors: Mapping[str, Any], cadence: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The given cadences, or the rig configuration's for the given detectors."""
        if cadence is not None:
            return cadence
        return {k: c for k, c in self.session.cadences().items() if k in detectors}

    def bound(self) -> dict[str, Any]:
        """Keyword arguments every user plan gets from the rig: limits, clock, ground truth (simulated rig)."""
        return {"clock": self.rig.clock, "truth": getattr(self.rig, "truth_reader", None),
                "limits": self.session.limits}

    def change_sample(self) -> Callable[[Any], Any]:
        """The sample-change hook: swap the simulated pellet, or pause for the operator on a real rig."""
        world = getattr(self.rig, "world", None)
        if world is None:
            from hotstage.plans.sintering import pause_for_sample_change

            return pause_for_sample_change
        from hotstage.simulated.parameters import SampleSpec

        def load(composition: Any) -> None:
            """A fresh simulated pellet of this CsPbI3 weight fraction."""
            world.load_sample(SampleSpec.composite(float(getattr(composition, "cspbi3_wt_frac", composition))))

        return load


# -- `hotstage qserver` -----------------------------------------------------------------------------------------
def redis_host_port(addr: str) -> tuple[str, int]:
    """(host, port) of a `--redis-addr` value as start-re-manager takes it: HOST, HOST:PORT or HOST:PORT/DB."""
    text = addr.strip()
    for prefix in ("redis://", "rediss://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.split("/", 1)[0]
    host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"--redis-addr {addr!r}: no host (expected HOST[:PORT])")
    try:
        number = int(port) if port else 6379
    except ValueError:
        raise ValueError(f"--redis-addr {addr!r}: port {port!r} is not a number") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"--redis-addr {addr!r}: port {number} is not a TCP port (1–65535)")
    return host, number


def redis_problem(addr: str, timeout: float = 3.0) -> str | None:
    """None when a Redis server answers PING at `addr`; else why not (one phrase)."""
    host, port = redis_host_port(addr)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            conn.settimeout(timeout)
            reply = conn.recv(64)
    except OSError as exc:
        return f"no Redis server at {host}:{port} ({exc.strerror or exc}); the queue server keeps its queue in " \
               f"Redis: start one (`redis-server --port {port}`; Debian: apt-get install redis-server)"
    if not (reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")):
        return f"{host}:{port} answered {reply[:40]!r} to PING: not a Redis server"
    return None


def manager_command(*, redis_addr: str, data_dir: Path, zmq_control_addr: str, zmq_info_addr: str,
                    extra: list[str]) -> list[str]:
    """The start-re-manager command line for the hotstage profile (ValueError when it is not installed)."""
    exe = shutil.which("start-re-manager") or shutil.which("start-re-manager", path=str(Path(sys.executable).parent))
    if exe is None:
        raise ValueError("start-re-manager not found (pip install bluesky-queueserver)")
    lists = data_dir / "qserver"
    return [
        exe,
        "--startup-module", PROFILE_MODULE,
        "--existing-plans-devices", str(lists / "existing_plans_and_devices.yaml"),
        "--user-group-permissions", str(PERMISSIONS_FILE),
        "--redis-addr", redis_addr,
        "--zmq-control-addr", zmq_control_addr,
        "--zmq-info-addr", zmq_info_addr,
        *extra,
    ]


def run(args: Any) -> int:
    """`hotstage qserver`: validate, then run the RE Manager with the hotstage profile until it stops or a signal.

    Bad input (rig TOML, data directory, Redis not reachable, start-re-manager missing) is a ValueError: one line,
    exit status 2, nothing started. SIGINT/SIGTERM/SIGHUP: a running plan is aborted, the environment closed (the
    session closes: heater off, storage flushed), then the manager stops; exit status 128 + the signal."""
    from hotstage.acquisition.config import RigConfig
    from hotstage.acquisition.storage import default_data_dir

    if args.rig:
        RigConfig.from_toml(args.rig)  # every key checked before anything starts
    if args.sample:
        from hotstage.simulated.parameters import load_sample

        load_sample(args.sample)
    data_dir = Path(args.data).expanduser().resolve() if args.data else Path(default_data_dir()).resolve()
    problem = redis_problem(args.redis_addr)
    if problem:
        raise ValueError(f"--redis-addr {args.redis_addr}: {problem}")
    cmd = manager_command(redis_addr=args.redis_addr, data_dir=data_dir, zmq_control_addr=args.zmq_control_addr,
                          zmq_info_addr=args.zmq_info_addr, extra=list(args.manager_args or []))
    (data_dir / "qserver").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for key, value in ((RIG_ENV, args.rig), (SAMPLE_ENV, args.sample), (DATA_ENV, args.data)):
        if value:
            env[key] = str(Path(value).expanduser().resolve())
        else:
            env.pop(key, None)
    if getattr(args, "no_analysis", False):
        env[ANALYSIS_ENV] = "0"
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # Ctrl-C reaches us, not the manager
        print(f"hotstage qserver: RE Manager on {args.zmq_control_addr} (Redis {args.redis_addr}, data {data_dir}, "
              f"rig {args.rig or 'simulated'}); Ctrl-C closes the environment and stops it", file=sys.stderr,
              flush=True)
        while proc.poll() is None:
            if received:
                shutdown(args.zmq_control_addr, proc)
                return 128 + received[0]
            time.sleep(0.2)
        return int(proc.returncode or 0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def shutdown(zmq_control_addr: str, proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """Abort a running plan, close the environment (the session closes safely), stop the manager; else kill it."""
    try:
        from bluesky_queueserver_api.zmq import REManagerAPI

        api = REManagerAPI(zmq_control_addr=zmq_control_addr.replace("*", "127.0.0.1"), timeout_recv=10.0)
        try:
            status = api.status()
            if status.get("worker_environment_exists"):
                if status.get("manager_state") == "executing_queue" or status.get("re_state") == "paused":
                    if status.get("re_state") == "running":
                        api.re_pause(option="immediate")
                        api.wait_for_idle_or_paused(timeout=timeout)
                    api.re_abort()
                    api.wait_for_idle(timeout=timeout)
                api.environment_close()
                api.wait_for_idle(timeout=timeout)
            api.send_request(method="manager_stop", params={"option": "safe_off"})
        finally:
            api.close()
        proc.wait(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the manager must not outlive us
        log.warning("hotstage qserver: could not stop the RE Manager in order (%s); terminating it", exc)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
