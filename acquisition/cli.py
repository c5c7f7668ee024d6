"""The `hotstage` command line: demo, run, runs, show, export, replay, report, serve and the simulated-rig server.

    hotstage demo [--json]                      the default simulated experiment, on the embedded catalog
    hotstage run --program P.toml [--sample S.toml] [--rig R.toml]
    hotstage runs [--sample NAME] [--limit N] [--json]
    hotstage show UID [--json]
    hotstage export UID [--out FILE] [--json]    a run's documents as JSON lines (DATA/exports/<uid>.jsonl)
    hotstage serve [--host H] [--port P] [--api-key K] [--read-key K] [--database URI]   the catalog as a Tiled server
    hotstage replay UID [--param KEY=VALUE ...] [--json]   re-analyse a stored raw run into a new derived run
    hotstage report UID [--out DIR]             PNG figures of a derived run (or of a raw run's newest one)
    hotstage qserver [--redis-addr HOST:PORT] [--rig R.toml] [--data DIR]   bluesky-queueserver RE Manager, hotstage profile
    hotstage sim serve [--sample S.toml] [--time-scale K]
    hotstage spool flush [--json]                write documents left in the storage spool to the catalog
    hotstage schema NAME                         JSON schema of a configuration: program, sample, rig or analysis

`demo` and `run` analyse live (a derived run beside the raw run; `--no-analysis` turns it off, `--param`
changes analysis parameters, see `hotstage.analysis.live.parameters`); `demo` also writes the report figures into
DATA/reports/<raw uid>/.

Data go to `--data DIR` (before or after the command), else `$HOTSTAGE_DATA`, else `./hotstage-data/`; with
`$HOTSTAGE_TILED_URI` set (and `$TILED_API_KEY`) a Tiled server is used instead. Commands that only read (runs,
show, export, report, replay, spool flush) refuse a directory without a catalog rather than create an empty one.
Errors in user input (files, options, `--param`) are reported in one line naming the file or option and the key,
with exit status 2; nothing is opened, started or moved before all input has been validated. An instrument that
cannot be opened when the session starts is one line too (exit 2), and no run is recorded.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hotstage` console script.

    Exit status: 0 success; 1 a run that did not succeed, or an unexpected error (one line; the traceback with
    ``HOTSTAGE_DEBUG=1``); 2 bad input; 128 + the signal for a signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; see
    `hotstage.acquisition.exits`). Log records are one line each on stderr; a closed stdout/stderr ends quietly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["sim", "serve"]:
        from hotstage.simulated.serve import main as serve_main

        return int(serve_main(argv[2:]) or 0)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from hotstage.acquisition.exits import DEBUG_ENV, Interrupted, configure_logging, quiet_streams, say

    configure_logging()
    try:
        code = int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Configuration and validation errors: one clear line, nothing has moved.
        say(f"hotstage: error: {exc}")
        code = EXIT_BAD_INPUT
    except Interrupted as exc:  # a signal before a session was opened (a session reports its own)
        head = "interrupted" if exc.name == "SIGINT" else f"{exc.name} received"
        say(f"hotstage: {head}; nothing was started and no run was recorded")
        code = exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C in a command that runs no session (read commands, before a session)
        say("hotstage: interrupted; no run was started or changed")
        code = 130
    except BrokenPipeError:  # stdout closed by its reader (`hotstage runs | head`)
        code = 1
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen failure: one line, not a traceback
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            import traceback

            traceback.print_exc()
        text = " ".join(str(exc).split())
        say(f"hotstage: error: {type(exc).__name__}" + (f": {text}" if text else "") +
            f" (set {DEBUG_ENV}=1 for the traceback)")
        code = 1
    quiet_streams()
    return code


class _Parser(argparse.ArgumentParser):
    """Bad arguments: ONE line `hotstage: error: …` and exit status 2 (no usage block, no traceback)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("hotstage").strip()
        self.exit(EXIT_BAD_INPUT, f"hotstage: error: {command + ': ' if command else ''}{message}\n")


def _port(text: str) -> int:
    """A TCP port to listen on: 1–65535 (a server the user connects to needs a known port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1–65535)")
    return port


def _time_scale(text: str) -> float:
    """Experiment seconds per wall second of the simulated rig: finite, above 0, at most 10000."""
    from hotstage.simulated.serve import time_scale

    return time_scale(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _uid(text: str) -> str:
    """A run uid or a prefix of one: not empty (an empty prefix would name the whole catalog)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a run uid (or a unique prefix) is required, got an empty string")
    return text.strip()


def _data_dir(text: str) -> str:
    """The catalog directory: not empty, not an existing file (whether it must exist depends on the command)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not a catalog directory")
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a catalog directory")
    return text


def _parser() -> argparse.ArgumentParser:
    from hotstage import __version__

    parser = _Parser(prog="hotstage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"hotstage {__version__}")
    parser.add_argument("--data", type=_data_dir, help="catalog directory (default: $HOTSTAGE_DATA or ./hotstage-data)")
    # --data also after the subcommand; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=_data_dir, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--version", action="version", version=f"hotstage {__version__}", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    demo = command("demo", help="run the default simulated in-situ experiment and summarise it")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--time-scale", type=_time_scale, default=None,
                      help="simulated seconds per wall second (above 0, at most 10000)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _analysis_options(demo)
    demo.set_defaults(func=_cmd_demo)

    run = command("run", help="run an in-situ temperature program")
    run.add_argument("--program", required=True, help="temperature program TOML")
    run.add_argument("--sample", help="sample TOML (default: the 40/60 composite)")
    run.add_argument("--rig", help="rig TOML (default: the simulated rig)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _analysis_options(run)
    run.set_defaults(func=_cmd_run)

    runs = command("runs", help="list the runs in the catalog")
    runs.add_argument("--sample", help="only runs of this sample name")
    runs.add_argument("--limit", type=_positive_int, default=20, help="at most this many, newest first")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_cmd_runs)

    show = command("show", help="metadata and streams of one run")
    show.add_argument("uid", type=_uid, help="run uid (or a unique prefix)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_show)

    export = command("export", help="a run's documents as JSON lines (what `hotstage replay` and "
                                    "hotstage.acquisition.replay read; the recorded-run format of tests/data)")
    export.add_argument("uid", type=_uid, help="run uid (or a unique prefix)")
    export.add_argument("--out", help="output file (default: DATA/exports/<uid>.jsonl)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=_cmd_export)

    serve_cat = command("serve", help="serve the embedded catalog over HTTP (a Tiled server) until Ctrl-C")
    serve_cat.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve_cat.add_argument("--port", type=_port, default=8000, help="TCP port, 1–65535 (default 8000)")
    serve_cat.add_argument("--api-key", help="the read-write key (default: $TILED_API_KEY, else the one stored in "
                                             "DATA/server-keys.json, else a new one stored there); prefer the "
                                             "environment: options are visible to other users in `ps`")
    serve_cat.add_argument("--read-key", help="the read-only key (default: $HOTSTAGE_READ_API_KEY, else stored in "
                                              "DATA/server-keys.json, else a new one stored there)")
    serve_cat.add_argument("--database", metavar="URI",
                           help="a facility catalog: metadata and tables in PostgreSQL, postgresql://USER@HOST:PORT/DB "
                                "(default: $HOTSTAGE_CATALOG_DATABASE; without either, the embedded SQLite catalog); "
                                "arrays and keys stay in DATA. The password never goes on the command line (ps "
                                "shows it): $PGPASSWORD, ~/.pgpass, or the whole URI in $HOTSTAGE_CATALOG_DATABASE")
    serve_cat.set_defaults(func=_cmd_serve)

    replay = command("replay", help="re-run the analysis on a stored raw run (a new derived run)")
    replay.add_argument("uid", type=_uid, help="raw run uid (or a unique prefix)")
    replay.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="analysis parameter override (JSON value), repeatable")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=_cmd_replay)

    report = command("report", help="PNG figures of a derived run")
    report.add_argument("uid", type=_uid, help="derived run uid, or a raw run uid (its newest derived run)")
    report.add_argument("--out", help="output directory (default: DATA/reports/<uid>)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=_cmd_report)

    schema = command("schema", help="print the JSON schema of a configuration (pydantic model)")
    schema.add_argument("name", choices=sorted(SCHEMAS), help="program, sample, rig or analysis")
    schema.set_defaults(func=_cmd_schema)

    spool = command("spool", help="the storage spool (documents not yet known to be in the catalog)")
    spool_sub = spool.add_subparsers(metavar="ACTION")
    flush = spool_sub.add_parser("flush", parents=[common],
                                 help="write what the spool holds to the catalog (nothing twice)")
    flush.add_argument("--json", action="store_true")
    flush.set_defaults(func=_cmd_spool_flush)

    qserver = command("qserver", help="run a bluesky-queueserver RE Manager whose environment is a hotstage session")
    qserver.add_argument("--redis-addr", default="127.0.0.1:6379", metavar="HOST:PORT",
                         help="the Redis server the queue lives in (default 127.0.0.1:6379)")
    qserver.add_argument("--rig", help="rig TOML (default: the simulated rig)")
    qserver.add_argument("--sample", help="sample TOML for the simulated rig (default: the 40/60 composite)")
    qserver.add_argument("--no-analysis", action="store_true", help="no live analysis (no derived runs)")
    qserver.add_argument("--zmq-control-addr", default="tcp://127.0.0.1:60615", metavar="ADDR",
                         help="where clients connect (default tcp://127.0.0.1:60615; tcp://*:PORT for the network)")
    qserver.add_argument("--zmq-info-addr", default="tcp://127.0.0.1:60625", metavar="ADDR",
                         help="where console output is published (default tcp://127.0.0.1:60625)")
    qserver.add_argument("manager_args", nargs="*", metavar="-- START-RE-MANAGER-ARG",
                         help="further start-re-manager options, after --")
    qserver.set_defaults(func=_cmd_qserver)

    # offline diffraction commands: each module owns its options and its run (hotstage.acquisition.offline_*)
    for name, module, help_ in (("calibrate", "offline_calibrate", "refine an instrument from a pattern of a standard"),
                                ("quantify", "offline_quantify", "quantify the phases of measured patterns")):
        offline = importlib.import_module(f"hotstage.acquisition.{module}")
        cmd = command(name, help=help_, description=offline.__doc__.split("\n\n")[0])
        offline.add_arguments(cmd)
        cmd.set_defaults(func=offline.run)

    from hotstage.simulated.serve import add_arguments as sim_serve_arguments

    sim = sub.add_parser("sim", help="the simulated rig")
    sim_sub = sim.add_subparsers(metavar="ACTION")
    serve = sim_sub.add_parser("serve", help="run the instrument emulators until Ctrl-C")
    sim_serve_arguments(serve)  # the same options (and checks) as `python -m hotstage.simulated.serve`
    serve.set_defaults(func=_cmd_sim_serve)
    return parser


# -- commands ---------------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from hotstage.acquisition.config import RigConfig
    from hotstage.plans.program import TemperatureProgram
    from hotstage.simulated.parameters import SampleSpec

    _data_to_write(args)
    rig: dict[str, Any] = {} if args.time_scale is None else {"rig": {"time_scale": args.time_scale}}
    _analysis_setting(args)  # bad input is one line before the calibration measures anything
    _check_catalog_server(args)
    instrument = _demo_calibration(args)
    if instrument is not None:
        rig["xrd"] = {"instrument": str(instrument)}
    config = RigConfig.from_dict(rig, source="<demo>") if rig else RigConfig()
    with _rig_start_errors(config):
        return _run_program(args, config, SampleSpec.default(), TemperatureProgram.demo(), "the demo program",
                            report=True)


def _demo_calibration(args: argparse.Namespace) -> Path | None:
    """Calibrate, then measure — what a user does on a new rig: LaB6 (NIST SRM 660c) measured by the simulated
    rig's diffractometer, an instrument refined from the lab default (`hotstage.simulated.standard`), written with
    its fit figure to DATA/calibration/; the demo run's live analysis then uses that file. None (the rig's shipped
    calibration is used) when the catalog is a Tiled server: there is no local data directory to write to."""
    from hotstage.acquisition.diffraction_plot import plot_fit
    from hotstage.acquisition.exits import say
    from hotstage.analysis.instrument import write_instprm
    from hotstage.simulated.standard import SEED, STANDARD, calibrate_simulated_rig

    root = _embedded_root(args)
    if root is None:
        return None
    out = root / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    cal = calibrate_simulated_rig(seed=SEED + 1)  # a fresh measurement, not the one the shipped file came from
    path = out / f"{STANDARD}.instprm"
    write_instprm(cal.instrument.replace(name=f"demo: calibrated on {STANDARD}, Rwp {cal.rwp:.4f}"), path)
    tt, _ = cal.tick_positions
    figure = plot_fit(out / f"{STANDARD}-fit.png", cal.two_theta, cal.counts, cal.curve,
                      background=cal.background, ticks={STANDARD: tt}, title=f"{STANDARD} calibration",
                      subtitle=f"Rwp {cal.rwp:.4f}")
    fwhm = float(cal.instrument.fwhm([30.0])[0])
    say(f"calibrated the simulated diffractometer on {STANDARD}: Rwp {cal.rwp:.4f}, FWHM {fwhm:.4f}° at 30° 2θ, "
        f"zero {cal.instrument.zero:+.4f}° -> {path} (fit: {figure.name})")
    return path


def _cmd_run(args: argparse.Namespace) -> int:
    from hotstage.acquisition.config import RigConfig
    from hotstage.plans.program import TemperatureProgram
    from hotstage.simulated.parameters import SampleSpec, load_sample

    _data_to_write(args)
    rig = RigConfig.from_toml(args.rig) if args.rig else RigConfig()
    sample = load_sample(args.sample) if args.sample else SampleSpec.default()
    program = TemperatureProgram.from_toml(args.program)
    with _rig_start_errors(rig):
        return _run_program(args, rig, sample, program, args.program)


class StartError(ValueError):
    """The rig could not be opened at the start of a session (before any run): one line, exit status 2."""


@contextmanager
def _rig_start_errors(rig: Any) -> Iterator[None]:
    """Turn an instrument that cannot be opened while the session starts into one line (StartError).

    Only errors raised while `Session.__enter__` runs (instruments opened, nothing acquired, no run recorded):
    the same InstrumentError during a run is the run's failure, reported by the run itself."""
    from hotstage.devices.visa import InstrumentError
    from pyvisa.errors import Error as VisaError

    held = _OpeningLogs()
    loggers = [logging.getLogger(name) for name in _OpeningLogs.LOGGERS]
    for logger in loggers:
        logger.addFilter(held)
    try:
        yield
    except (InstrumentError, VisaError) as exc:
        if not _raised_opening_session(exc.__traceback__):
            raise
        held.held.clear()  # the error line says how many tries were made
        text = " ".join(str(exc).split())  # pyvisa messages span lines
        instrument = getattr(exc, "instrument", "") or "the instruments"
        if not getattr(exc, "resource", ""):
            text += f" (rig.visa_library = {rig.visa_library!r})"
        what = text if text.startswith(instrument) else f"cannot open {instrument}: {text}"
        raise StartError(f"{rig.source}: {what}; no run was recorded") from None


    finally:
        for logger in loggers:
            logger.removeFilter(held)
        held.release()


def _is_session_enter(code: Any) -> bool:
    return code.co_name == "__enter__" and Path(code.co_filename).parts[-2:] == ("acquisition", "session.py")


def _raised_opening_session(tb: Any) -> bool:
    """True when the traceback `tb` runs through `hotstage.acquisition.session.Session.__enter__` (the rig being opened)."""
    while tb is not None:
        if _is_session_enter(tb.tb_frame.f_code):
            return True
        tb = tb.tb_next
    return False


class _OpeningLogs(logging.Filter):
    """Holds the device loggers' retry warnings while the session opens the rig (in `Session.__enter__`).

    When opening fails they are dropped: the one error line says how many tries were made. Otherwise they are
    let through, in order, before the next device log record (or when the command ends)."""

    LOGGERS = ("hotstage.devices.visa", "hotstage.devices.lakeshore", "hotstage.devices.spectrometers")

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []
        self._releasing = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self._releasing:
            return True
        frame = sys._getframe(1)
        while frame is not None:
            if _is_session_enter(frame.f_code):
                self.held.append(record)
                return False
            frame = frame.f_back
        self.release()
        return True

    def release(self) -> None:
        """Emit the held records through their loggers."""
        held, self.held = self.held, []
        self._releasing = True
        try:
            for record in held:
                logging.getLogger(record.name).handle(record)
        finally:
            self._releasing = False


def _analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-analysis", action="store_true", help="no live analysis (no derived run)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="analysis parameter override (JSON value), repeatable")


def _analysis_setting(args: argparse.Namespace) -> Any:
    """False, or the analysis parameters (validated before anything moves, with --no-analysis too: a bad --param
    is a mistake either way)."""
    params = _analysis_parameters(args)
    return False if args.no_analysis else params


def _analysis_parameters(args: argparse.Namespace) -> Any:
    """The `--param` overrides applied to the defaults; a bad one is a ParameterError naming `--param KEY`."""
    from hotstage.analysis.live import AnalysisParameters, parse_overrides
    from hotstage.analysis.live.parameters import ParameterError

    try:
        return AnalysisParameters().replace(**parse_overrides(args.param))
    except ParameterError as exc:
        raise ParameterError(f"--param {exc}") from None


def _run_program(args: argparse.Namespace, rig: Any, sample: Any, program: Any, program_source: str,
                 report: bool = False) -> int:
    """Validate, run on the session, then print the summary (human or JSON) with the derived run's.

    SIGINT, SIGTERM and SIGHUP abort the run safely (`hotstage.acquisition.exits`): heater off and confirmed, the run stored
    with exit_status "abort" and a reason naming the signal, then one line and exit status 130/143/129. A run that
    fails or aborts otherwise prints its summary and one line `hotstage: run UID ended fail: <reason>`, exit 1."""
    import time

    from hotstage.acquisition.exits import ExitSignals, Interrupted, interrupted_line, say
    from hotstage.acquisition.session import Session
    from hotstage.plans.program import ProgramError

    try:
        program.validate(_limits(rig))  # before anything is opened or moved
    except ProgramError as exc:
        raise ProgramError(f"{program_source}: {exc} (rig limits from {rig.source})") from None
    analysis = _analysis_setting(args)
    _check_catalog_server(args)
    summary: dict[str, Any] | None = None
    failure: Exception | None = None
    with ExitSignals() as signals:
        session = Session(rig=rig, sample=sample, data_dir=args.data, progress=not args.no_progress,
                          analysis=analysis, signals=signals)
        try:
            with session:
                t0 = time.monotonic()
                try:
                    uid: str | None = session.insitu(program)
                except Interrupted:
                    raise
                except Exception as exc:  # noqa: BLE001 - the run ended fail/abort and is stored: reported below
                    failure, uid = exc, session.last_run_uid
                    if uid is None:
                        raise  # no run was opened (e.g. a furnace too warm to start): the error is the report
                summary = _session_summary(args, session, uid, t0, report)
        except Interrupted as exc:
            say(_interrupted(exc, session, interrupted_line))
            return exc.exit_code
        late = signals.first if signals.pending else None  # arrived while the session closed
    if summary is not None:
        try:
            _emit(summary, args.json, human=_human_summary)
        except OSError:  # the terminal or pipe is gone (SIGHUP): the run is stored all the same
            pass
    stop = session.last_stop or {}  # the RunEngine's own stop: what the catalog holds may lag (a re-created file)
    if failure is not None or stop.get("exit_status") != "success":
        reason = " ".join(str(stop.get("reason") or failure or "").split())
        say(f"hotstage: run {session.last_run_uid} ended {stop.get('exit_status', 'without a stop document')}"
            + (f": {reason}" if reason else ""))
    if late is not None:
        say(_interrupted(late, session, interrupted_line))
        return late.exit_code
    return 0 if failure is None and stop.get("exit_status") == "success" else 1


def _interrupted(exc: Any, session: Any, line: Any) -> str:
    """The one line for a signal that ended `session` (what was made safe and stored, from the session's state)."""
    return line(exc, started=session.rig is not None, heater_off=session.heater_off, stored=session.stored,
                run_uid=session.last_run_uid, exit_status_=(session.last_stop or {}).get("exit_status"))


def _session_summary(args: argparse.Namespace, session: Any, uid: str, t0: float, report: bool) -> dict[str, Any]:
    """The run's summary with its derived run's (and the report figures of `demo`), read back from the catalog."""
    import time

    from hotstage.acquisition.summary import summarise_derived, summarise_run

    catalog = session.reading_catalog()
    summary = summarise_run(catalog[uid])
    summary["data"] = _where(args.data)
    derived_uid = session.derived_uid(uid)
    if derived_uid is not None:
        summary["derived"] = summarise_derived(catalog[derived_uid])
        stats = session.analysis.stats.get(uid, {}) if session.analysis else {}
        summary["derived"]["live"] = {
            "backlog_at_raw_stop": stats.get("backlog_at_raw_stop"),
            "max_backlog": stats.get("max_backlog"),
            "seconds_after_raw_stop": stats.get("lag_s"),
            "wall_s": time.monotonic() - t0,
        }
        if report:
            from hotstage.acquisition.report import write_report

            out = _reports_dir(args.data) / uid
            summary["report"] = [str(p) for p in write_report(catalog[derived_uid], out)]
    return summary


def _reports_dir(data: str | None) -> Any:
    """DATA/reports (the embedded catalog's directory, or the default one with a server)."""
    from pathlib import Path

    from hotstage.acquisition.storage import default_data_dir

    return (Path(data) if data else default_data_dir()).expanduser().resolve() / "reports"


def _cmd_replay(args: argparse.Namespace) -> int:
    from hotstage.acquisition.replay import replay
    from hotstage.acquisition.summary import derived_text, summarise_derived

    params = _analysis_parameters(args)  # bad keys or values: exit 2 before any work
    catalog = _catalog_to_read(args)
    uid = replay(catalog, args.uid, params)
    summary = summarise_derived(catalog[uid])
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print("\n".join(derived_text(summary)))
    return 0 if summary.get("exit_status") == "success" and not (summary.get("summary") or {}).get("errors") else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from hotstage.acquisition.report import write_report
    from hotstage.acquisition.summary import find_derived, find_run

    if args.out is not None and (not args.out.strip() or Path(args.out).expanduser().is_file()):
        raise CommandError(f"--out {args.out!r}: must name a directory for the figures, not a file")
    catalog = _catalog_to_read(args)
    run = find_run(catalog, args.uid)
    start = run.metadata["start"]
    if "derived_from" not in start:
        derived = find_derived(catalog, start["uid"])
        if derived is None:
            raise ValueError(f"run {start['uid']} has no derived run; run `hotstage replay {start['uid']}` first")
        run = catalog[derived]
    out = args.out or _reports_dir(args.data) / run.metadata["start"]["derived_from"]
    files = [str(p) for p in write_report(run, out)]
    if args.json:
        print(json.dumps({"uid": run.metadata["start"]["uid"], "files": files}, indent=1))
    else:
        print("\n".join(["report of derived run " + run.metadata["start"]["uid"], *files]))
    return 0


def _cmd_spool_flush(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from hotstage.acquisition.storage.spool import default_spool_dir, flush_spool, pending_runs
    from hotstage.acquisition.storage import CatalogLocation, close_catalog, open_catalog

    root = _embedded_root(args)
    if root is not None and not root.is_dir():
        raise CommandError(f"{_describe_data(args, root)}: no such directory, so no spool to flush")
    directory = default_spool_dir(CatalogLocation(data_dir=str(root)) if root is not None else None)
    results = []
    if pending_runs(directory):  # only then is the catalog opened (and created if it is missing)
        _check_catalog_server(args)
        catalog = open_catalog(args.data)
        try:
            results = flush_spool(catalog, directory)
        finally:
            close_catalog(catalog)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    elif not results:
        print(f"spool {directory}: empty, nothing to write")
    else:
        for r in results:
            extra = "; a stop document was added (exit_status fail)" if r.stop_added else ""
            print(f"{r.run_uid}: {r.status}, {r.documents} documents ({r.events} events){extra}")
            for e in r.errors[:3]:
                print(f"    {e}")
    return 1 if any(r.status == "failed" for r in results) else 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from hotstage.acquisition.summary import list_runs

    rows = list_runs(_catalog_to_read(args), sample=args.sample, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no runs")
        return 0
    print(f"{'uid':36}  {'start (UTC)':19}  {'plan':14}  {'status':8}  sample")
    for row in rows:
        print(f"{row['uid']:36}  {row['start']:19}  {row['plan']:14}  {row['exit_status']:8}  {row['sample']}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from hotstage.acquisition.summary import find_run, summarise_run

    summary = summarise_run(find_run(_catalog_to_read(args), args.uid))
    _emit(summary, args.json, human=_human_summary)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hotstage.acquisition.jsonl import save_jsonl
    from hotstage.acquisition.storage import default_data_dir
    from hotstage.acquisition.summary import find_run

    if args.out is not None and (not args.out.strip() or Path(args.out).expanduser().is_dir()):
        raise CommandError(f"--out {args.out!r}: must name a file for the JSON lines, not a directory")
    run = find_run(_catalog_to_read(args), args.uid)
    uid = run.metadata["start"]["uid"]
    data = (Path(args.data) if args.data else default_data_dir()).expanduser().resolve()
    out = Path(args.out) if args.out else data / "exports" / f"{uid}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}

    def counted() -> Any:
        for name, doc in run.documents():
            counts[name] = counts.get(name, 0) + 1
            yield name, doc

    save_jsonl(counted(), out)
    summary = {"uid": uid, "path": str(out.resolve()), "documents": counts}
    _emit(summary, args.json, human=lambda s: f"{s['path']}: {sum(s['documents'].values())} documents "
                                             f"({', '.join(f'{k} {v}' for k, v in s['documents'].items())})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from hotstage.acquisition.catalog_server import serve

    _data_to_write(args)  # a new directory is fine: sessions may write through the server
    serve(args.data, host=args.host, port=args.port, api_key=args.api_key, read_key=args.read_key,
          database=args.database)
    return 0


def _cmd_qserver(args: argparse.Namespace) -> int:
    from hotstage.acquisition.qserver import run as run_qserver

    if args.data:
        _data_to_write(args)
    return run_qserver(args)


SCHEMAS = {
    "program": "hotstage.plans.program:TemperatureProgram",
    "sample": "hotstage.simulated.parameters:SampleSpec",
    "rig": "hotstage.acquisition.config:RigConfig",
    "analysis": "hotstage.analysis.live.parameters:AnalysisParameters",
}
"""`hotstage schema NAME` → the pydantic model whose JSON schema it prints."""


def _cmd_schema(args: argparse.Namespace) -> int:
    import importlib

    module, _, name = SCHEMAS[args.name].partition(":")
    model = getattr(importlib.import_module(module), name)
    print(json.dumps(model.model_json_schema(), indent=1, ensure_ascii=False))
    return 0


def _cmd_sim_serve(args: argparse.Namespace) -> int:
    from hotstage.simulated.serve import run

    return run(args)


class CommandError(ValueError):
    """A command-line argument that cannot be used (one line, exit status 2; nothing was opened)."""


def _data_to_write(args: argparse.Namespace) -> None:
    """A session's catalog directory may be new (it is created), but not a file (checked before anything starts)."""
    root = _embedded_root(args)
    if root is not None and root.exists() and not root.is_dir():
        raise CommandError(f"{_describe_data(args, root)}: is a file, not a catalog directory")


def _embedded_root(args: argparse.Namespace) -> Path | None:
    """The embedded catalog's directory, with `open_catalog`'s precedence; None when a Tiled server is used."""
    from hotstage.acquisition.storage import URI_ENV, default_data_dir

    if args.data is None and os.environ.get(URI_ENV):
        return None
    return (Path(args.data) if args.data is not None else default_data_dir()).expanduser()


def _describe_data(args: argparse.Namespace, root: Path) -> str:
    """How the user named the catalog directory (for error lines)."""
    from hotstage.acquisition.storage import DATA_ENV

    if args.data is not None:
        return f"--data {args.data}"
    if os.environ.get(DATA_ENV):
        return f"${DATA_ENV}={os.environ[DATA_ENV]}"
    return f"{root} (the default catalog directory)"


def _catalog_to_read(args: argparse.Namespace) -> Any:
    """Open the catalog a read command reads; a directory without one is an error (no empty catalog is created)."""
    from hotstage.acquisition.storage import open_catalog

    root = _embedded_root(args)
    if root is not None and not (root / "catalog.db").is_file():
        why = "no such directory" if not root.exists() else "no hotstage catalog there (no catalog.db)"
        raise CommandError(f"{_describe_data(args, root)}: {why}")
    _check_catalog_server(args)
    # a damaged table store: one warning line, metadata and arrays stay readable (acquisition.datadir)
    return open_catalog(args.data, allow_damaged=True)


def _check_catalog_server(args: argparse.Namespace) -> None:
    """With a Tiled server ($HOTSTAGE_TILED_URI, no --data): a wrong URI, a server that is down or a wrong key is one
    line and exit status 2 (`hotstage.acquisition.tiled_errors`), checked before anything starts or is read."""
    if _embedded_root(args) is None:
        from hotstage.acquisition.tiled_errors import check_server

        check_server()


# -- helpers ----------------------------------------------------------------------------------------
def _limits(rig: Any) -> Any:
    from hotstage.plans.program import RigLimits

    lim = rig.limits
    return RigLimits(max_C=lim.max_C, min_C=lim.min_C, min_rate=lim.min_rate_C_per_min, max_rate=lim.max_rate_C_per_min)


def _where(data: str | None) -> str:
    from hotstage.acquisition.storage import describe_location

    return describe_location(data)


def _emit(summary: dict[str, Any], as_json: bool, human: Any) -> None:
    if as_json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(human(summary))


def _human_summary(s: dict[str, Any]) -> str:
    """A few lines a scientist reads at the end of a run."""
    lines = [
        f"run {s['uid']}  ({s['plan']}, {s['exit_status']}, {s['duration_s']:.1f} s wall)",
        f"sample   {s['sample']}",
        f"program  {s['program']}",
        "streams  " + ", ".join(f"{k}: {v['events']} events" for k, v in s["streams"].items()),
    ]
    if s.get("temperature_C"):
        t = s["temperature_C"]
        lines.append(f"furnace  {t['min']:.1f} → {t['max']:.1f} °C (final {t['final']:.1f} °C)")
    if s.get("truth"):
        lines.append("truth    " + s["truth"])
    if s.get("data"):
        lines.append(f"data     {s['data']}")
    lines.append(f"uid      {s['uid']}")
    if s.get("derived"):
        from hotstage.acquisition.summary import derived_text

        lines.extend(derived_text(s["derived"]))
        live = s["derived"].get("live") or {}
        if live.get("backlog_at_raw_stop") is not None:
            lines.append(f"analysis kept up: {live['backlog_at_raw_stop']} documents queued at the raw stop, derived "
                         f"run complete {live['seconds_after_raw_stop']:.2f} s later (largest backlog "
                         f"{live['max_backlog']})")
    if s.get("report"):
        lines.append("report   " + os.path.dirname(s["report"][0]) + "/  (" +
                     ", ".join(os.path.basename(p) for p in s["report"]) + ")")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
