"""The `hotstage` command line: demo, run, runs, show, export, replay, report, serve and the simulated-rig server.

    hotstage demo [--json]                      the default simulated experiment, on the embedded catalog
    hotstage run --program P.toml [--sample S.toml] [--rig R.toml]
    hotstage runs [--sample NAME] [--limit N] [--json]
    hotstage show UID [--json]
    hotstage export UID [--out FILE] [--json]    a run's documents as JSON lines (DATA/exports/<uid>.jsonl)
    hotstage serve [--host H] [--port P] [--api-key K]   the embedded catalog as a Tiled server
    hotstage replay UID [--param KEY=VALUE ...] [--json]   re-analyse a stored raw run into a new derived run
    hotstage report UID [--out DIR]             PNG figures of a derived run (or of a raw run's newest one)
    hotstage sim serve [--sample S.toml] [--time-scale K]
    hotstage spool flush [--json]                write documents left in the storage spool to the catalog

`demo` and `run` analyse live (a derived run beside the raw run; `--no-analysis` turns it off, `--param`
changes analysis parameters, see `analysis.live.parameters`); `demo` also writes the report figures into
DATA/reports/<raw uid>/.

Data go to `--data DIR`, else `$HOTSTAGE_DATA`, else `./hotstage-data/`; with `$HOTSTAGE_TILED_URI` set
(and `$TILED_API_KEY`) a Tiled server is used instead. Errors in user input are reported in one line naming
the file and key, with exit status 2; nothing moves before all input has been validated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hotstage` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["sim", "serve"]:
        from simulated.serve import main as serve_main

        return int(serve_main(argv[2:]) or 0)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Configuration and validation errors: one clear line, nothing has moved.
        print(f"hotstage: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("hotstage: interrupted; the furnace heater was switched off and the run was stored", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotstage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="catalog directory (default: $HOTSTAGE_DATA or ./hotstage-data)")
    sub = parser.add_subparsers(metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the default simulated in-situ experiment and summarise it")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--time-scale", type=float, default=None, help="simulated seconds per wall second")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _analysis_options(demo)
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run an in-situ temperature program")
    run.add_argument("--program", required=True, help="temperature program TOML")
    run.add_argument("--sample", help="sample TOML (default: the 40/60 composite)")
    run.add_argument("--rig", help="rig TOML (default: the simulated rig)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _analysis_options(run)
    run.set_defaults(func=_cmd_run)

    runs = sub.add_parser("runs", help="list the runs in the catalog")
    runs.add_argument("--sample", help="only runs of this sample name")
    runs.add_argument("--limit", type=int, default=20, help="at most this many, newest first")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_cmd_runs)

    show = sub.add_parser("show", help="metadata and streams of one run")
    show.add_argument("uid", help="run uid (or a unique prefix)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_show)

    export = sub.add_parser("export", help="a run's documents as JSON lines (what `hotstage replay` and "
                                           "acquisition.replay read; the recorded-run format of tests/data)")
    export.add_argument("uid", help="run uid (or a unique prefix)")
    export.add_argument("--out", help="output file (default: DATA/exports/<uid>.jsonl)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=_cmd_export)

    serve_cat = sub.add_parser("serve", help="serve the embedded catalog over HTTP (a Tiled server) until Ctrl-C")
    serve_cat.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve_cat.add_argument("--port", type=int, default=8000)
    serve_cat.add_argument("--api-key", help="the key clients must give (default: $TILED_API_KEY, else random)")
    serve_cat.set_defaults(func=_cmd_serve)

    replay = sub.add_parser("replay", help="re-run the analysis on a stored raw run (a new derived run)")
    replay.add_argument("uid", help="raw run uid (or a unique prefix)")
    replay.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="analysis parameter override (JSON value), repeatable")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=_cmd_replay)

    report = sub.add_parser("report", help="PNG figures of a derived run")
    report.add_argument("uid", help="derived run uid, or a raw run uid (its newest derived run)")
    report.add_argument("--out", help="output directory (default: DATA/reports/<uid>)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=_cmd_report)

    spool = sub.add_parser("spool", help="the storage spool (documents not yet known to be in the catalog)")
    spool_sub = spool.add_subparsers(metavar="ACTION")
    flush = spool_sub.add_parser("flush", help="write what the spool holds to the catalog (nothing twice)")
    flush.add_argument("--json", action="store_true")
    flush.set_defaults(func=_cmd_spool_flush)

    sim = sub.add_parser("sim", help="the simulated rig")
    sim_sub = sim.add_subparsers(metavar="ACTION")
    serve = sim_sub.add_parser("serve", help="run the instrument emulators until Ctrl-C")
    serve.add_argument("--sample")
    serve.add_argument("--time-scale", type=float)
    return parser


# -- commands ---------------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from acquisition.config import RigConfig
    from plans.program import TemperatureProgram
    from simulated.parameters import SampleSpec

    rig = RigConfig() if args.time_scale is None else RigConfig(time_scale=args.time_scale)
    return _run_program(args, rig, SampleSpec.default(), TemperatureProgram.demo(), "the demo program", report=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from acquisition.config import RigConfig
    from plans.program import TemperatureProgram
    from simulated.parameters import SampleSpec, load_sample

    rig = RigConfig.from_toml(args.rig) if args.rig else RigConfig()
    sample = load_sample(args.sample) if args.sample else SampleSpec.default()
    program = TemperatureProgram.from_toml(args.program)
    return _run_program(args, rig, sample, program, args.program)


def _analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-analysis", action="store_true", help="no live analysis (no derived run)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="analysis parameter override (JSON value), repeatable")


def _analysis_setting(args: argparse.Namespace) -> Any:
    """False, or the analysis parameters (validated before anything moves)."""
    from analysis.live import AnalysisParameters, parse_overrides

    if args.no_analysis:
        return False
    return AnalysisParameters().replace(**parse_overrides(args.param))


def _run_program(args: argparse.Namespace, rig: Any, sample: Any, program: Any, program_source: str,
                 report: bool = False) -> int:
    """Validate, run on the session, then print the summary (human or JSON) with the derived run's."""
    import time

    from acquisition.session import Session
    from acquisition.summary import summarise_derived, summarise_run
    from plans.program import ProgramError

    try:
        program.validate(_limits(rig))  # before anything is opened or moved
    except ProgramError as exc:
        raise ProgramError(f"{program_source}: {exc} (rig limits from {rig.source})") from None
    analysis = _analysis_setting(args)
    with Session(rig=rig, sample=sample, data_dir=args.data, progress=not args.no_progress,
                 analysis=analysis) as session:
        t0 = time.monotonic()
        uid = session.insitu(program)
        run = session.catalog[uid]
        summary = summarise_run(run)
        summary["data"] = _where(args.data)
        derived_uid = session.derived_uid(uid)
        if derived_uid is not None:
            summary["derived"] = summarise_derived(session.catalog[derived_uid])
            stats = session.analysis.stats.get(uid, {}) if session.analysis else {}
            summary["derived"]["live"] = {
                "backlog_at_raw_stop": stats.get("backlog_at_raw_stop"),
                "max_backlog": stats.get("max_backlog"),
                "seconds_after_raw_stop": stats.get("lag_s"),
                "wall_s": time.monotonic() - t0,
            }
            if report:
                from acquisition.report import write_report

                out = _reports_dir(args.data) / uid
                summary["report"] = [str(p) for p in write_report(session.catalog[derived_uid], out)]
    _emit(summary, args.json, human=_human_summary)
    return 0 if summary.get("exit_status") == "success" else 1


def _reports_dir(data: str | None) -> Any:
    """DATA/reports (the embedded catalog's directory, or the default one with a server)."""
    from pathlib import Path

    from acquisition.storage import default_data_dir

    return (Path(data) if data else default_data_dir()).expanduser().resolve() / "reports"


def _cmd_replay(args: argparse.Namespace) -> int:
    from acquisition.replay import replay
    from acquisition.storage import open_catalog
    from acquisition.summary import derived_text, summarise_derived
    from analysis.live import AnalysisParameters, parse_overrides

    params = AnalysisParameters().replace(**parse_overrides(args.param))  # bad keys: exit 2 before any work
    catalog = open_catalog(args.data)
    uid = replay(catalog, args.uid, params)
    summary = summarise_derived(catalog[uid])
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print("\n".join(derived_text(summary)))
    return 0 if summary.get("exit_status") == "success" and not (summary.get("summary") or {}).get("errors") else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from acquisition.report import write_report
    from acquisition.storage import open_catalog
    from acquisition.summary import find_derived, find_run

    catalog = open_catalog(args.data)
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

    from acquisition.spool import default_spool_dir, flush_spool, pending_runs
    from acquisition.storage import catalog_location, close_catalog, open_catalog

    catalog = open_catalog(args.data)
    try:
        directory = default_spool_dir(catalog_location(catalog))
        results = flush_spool(catalog, directory) if pending_runs(directory) else []
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
    from acquisition.storage import open_catalog
    from acquisition.summary import list_runs

    rows = list_runs(open_catalog(args.data), sample=args.sample, limit=args.limit)
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
    from acquisition.storage import open_catalog
    from acquisition.summary import find_run, summarise_run

    summary = summarise_run(find_run(open_catalog(args.data), args.uid))
    _emit(summary, args.json, human=_human_summary)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from acquisition.jsonl import save_jsonl
    from acquisition.storage import default_data_dir, open_catalog
    from acquisition.summary import find_run

    run = find_run(open_catalog(args.data), args.uid)
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
    from acquisition.storage import serve_catalog

    serve_catalog(args.data, host=args.host, port=args.port, api_key=args.api_key)
    return 0


# -- helpers ----------------------------------------------------------------------------------------
def _limits(rig: Any) -> Any:
    from plans.program import RigLimits

    lim = rig.limits
    return RigLimits(max_C=lim.max_C, min_C=lim.min_C, min_rate=lim.min_rate_C_per_min, max_rate=lim.max_rate_C_per_min)


def _where(data: str | None) -> str:
    from acquisition.storage import describe_location

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
        from acquisition.summary import derived_text

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
