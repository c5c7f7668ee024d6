"""The `hotstage` command line: demo, run, runs, show and the simulated-rig server.

    hotstage demo [--json]                      the default simulated experiment, on the embedded catalog
    hotstage run --program P.toml [--sample S.toml] [--rig R.toml]
    hotstage runs [--sample NAME] [--limit N] [--json]
    hotstage show UID [--json]
    hotstage sim serve [--sample S.toml] [--time-scale K]

Data go to `--data DIR`, else `$HOTSTAGE_DATA`, else `./hotstage-data/`; with `$HOTSTAGE_TILED_URI` set
(and `$TILED_API_KEY`) a Tiled server is used instead. Errors in user input are reported in one line naming
the file and key, with exit status 2; nothing moves before all input has been validated.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run an in-situ temperature program")
    run.add_argument("--program", required=True, help="temperature program TOML")
    run.add_argument("--sample", help="sample TOML (default: the 40/60 composite)")
    run.add_argument("--rig", help="rig TOML (default: the simulated rig)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    return _run_program(args, rig, SampleSpec.default(), TemperatureProgram.demo(), "the demo program")


def _cmd_run(args: argparse.Namespace) -> int:
    from acquisition.config import RigConfig
    from plans.program import TemperatureProgram
    from simulated.parameters import SampleSpec, load_sample

    rig = RigConfig.from_toml(args.rig) if args.rig else RigConfig()
    sample = load_sample(args.sample) if args.sample else SampleSpec.default()
    program = TemperatureProgram.from_toml(args.program)
    return _run_program(args, rig, sample, program, args.program)


def _run_program(args: argparse.Namespace, rig: Any, sample: Any, program: Any, program_source: str) -> int:
    """Validate, run on the session, then print the summary (human or JSON)."""
    from acquisition.session import Session
    from acquisition.summary import summarise_run
    from plans.program import ProgramError

    try:
        program.validate(_limits(rig))  # before anything is opened or moved
    except ProgramError as exc:
        raise ProgramError(f"{program_source}: {exc} (rig limits from {rig.source})") from None
    with Session(rig=rig, sample=sample, data_dir=args.data, progress=not args.no_progress) as session:
        uid = session.insitu(program)
        run = session.catalog[uid]
        summary = summarise_run(run)
        summary["data"] = _where(args.data)
    _emit(summary, args.json, human=_human_summary)
    return 0 if summary.get("exit_status") == "success" else 1


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
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
