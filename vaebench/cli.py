"""Command line: ``vaebench run``, ``plugins``, ``report``, ``compare`` and ``sweep``.

Thin: each command's flags come from its configuration, the work from the modules it names
(imported when the command runs, so ``--help`` never loads torch), the tables from
``vaebench.present.console``. Exit codes: 0 done, 1 some model failed or diverged (or a
regression), 2 unusable input, with a one-line message and no traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from vaebench import __version__
from vaebench.config import add_run_flags
from vaebench.errors import ConfigError, VaebenchError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every layer that lets an interruption through lets this."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``vaebench: error: ...``) and exit 2."""

    def error(self, message: str):
        print(f"vaebench: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vaebench",
        description="Train, evaluate and time VAEs assembled from plugins; report, compare and sweep them.",
    )
    parser.add_argument("--version", action="version", version=f"vaebench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = commands.add_parser(
        "run",
        help="train, evaluate and time VAEs",
        description="Train, evaluate and time every model x plugin x prior combination.",
    )
    add_run_flags(run)
    run.add_argument(
        "--resume",
        metavar="DIR",
        type=Path,
        help="continue the interrupted run in DIR as it was configured (its config.json): "
        "finished models keep their rows, an interrupted one continues from its last "
        "completed epoch",
    )

    run.add_argument(
        "--download",
        action="store_true",
        help="fetch the task's files first when they are missing (vaebench data fetch)",
    )

    data = commands.add_parser(
        "data",
        help="fetch, verify and list the tasks' published data files",
        description="Files go to --data-root, else $VAEBENCH_DATA, else the platform's user "
        "cache folder. Each download is checked against the sha256 its task file pins.",
    )
    actions = data.add_subparsers(dest="action", required=True, parser_class=Parser)
    fetch = actions.add_parser("fetch", help="download, verify and unpack tasks' files")
    fetch.add_argument("tasks", nargs="+", metavar="TASK")
    fetch.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a server may stay silent (default 30)"
    )
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    listing = actions.add_parser("list", help="each task's files: verified, present or missing")
    verify = actions.add_parser("verify", help="recompute every present file's sha256")
    verify.add_argument("tasks", nargs="*", metavar="TASK", help="default: every task")
    for sub in (fetch, listing, verify):
        sub.add_argument("--data-root", type=Path, help="default: $VAEBENCH_DATA, else the cache")

    plugins = commands.add_parser("plugins", help="list every registered component")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument(
        "--options",
        action="store_true",
        help="also list each component's declared options (-A, -P, -L, -D, -M, -O, -S keys); "
        "imports every factory",
    )

    tasks = commands.add_parser(
        "tasks",
        help="list the versioned benchmark tasks (vaebench run --task NAME)",
        description="Each task fixes data files, splits, binarization, likelihood, K and stopping rule.",
    )
    tasks.add_argument("--json", action="store_true", help="machine-readable output")

    report = commands.add_parser(
        "report",
        help="write an HTML report and its Markdown twin from run folders",
        description="One self-contained HTML file (figures embedded) and a Markdown twin with PNGs beside it.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        help="HTML file (default: RUN_DIR/report.html of the first run)",
    )

    sweep = commands.add_parser(
        "sweep",
        help="run a grid of settings from a TOML file, aggregated over seeds",
        description="Exit codes: 0 every cell finished, 1 some cell diverged or failed, 2 unusable input.",
    )
    sweep.add_argument("file", type=Path, metavar="SWEEP.toml")
    sweep.add_argument(
        "--executor",
        default="local",
        help="local (a process pool, default), ray, or one a plugin adds",
    )
    sweep.add_argument(
        "--workers", type=_positive_int, default=1, help="cells run at once (default: %(default)s)"
    )
    sweep.add_argument("--out", type=Path, help="sweep folder (default: a new sweeps/<timestamp>)")
    sweep.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out, skipping finished cells"
    )
    sweep.add_argument("--dry-run", action="store_true", help="print the expanded cells and stop")
    sweep.add_argument(
        "--ray-address", help="address of a running Ray cluster (default: start a local one)"
    )
    sweep.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")

    compare = commands.add_parser(
        "compare",
        help="per-model deltas between two runs; exit 1 on a regression",
        description="Exit codes: 0 no regression, 1 a model regressed beyond the thresholds, 2 unusable input.",
    )
    compare.add_argument("base", type=Path, metavar="BASE_DIR")
    compare.add_argument("new", type=Path, metavar="NEW_DIR")
    compare.add_argument(
        "--max-slowdown",
        default="10%",
        help="largest tolerated throughput drop (default: %(default)s)",
    )
    compare.add_argument(
        "--max-nll-increase",
        default="1.0",
        help="largest tolerated IW-NLL rise in nats (default: %(default)s)",
    )
    compare.add_argument(
        "--alpha",
        default="0.05",
        help="with several seeds per side, a change counts only at p < alpha (Welch's t-test; "
        "default: %(default)s)",
    )
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vaebench.config import from_args
    from vaebench.present.console import RichReporter, print_run
    from vaebench.registry import load_registry
    from vaebench.resolve import resolve_config
    from vaebench.runner import run
    from vaebench.tasks import get_task

    registry = load_registry()
    given = from_args(args)
    if args.resume is not None:
        from vaebench.resolve import resume_config

        config = resolve_config(resume_config(args.resume, given), registry)
    else:
        config = resolve_config(given, registry)
    if config.warnings and not config.quiet:
        for warning in config.warnings.split("; "):
            print(f"vaebench: warning: {warning}", file=sys.stderr)
    if args.download and config.task:  # only what is missing: a run works offline otherwise
        from vaebench.datafetch import fetch
        from vaebench.errors import DataError
        from vaebench.tasks import find_files

        task = get_task(registry, config.task)
        try:
            find_files(task, Path(config.data_root))
        except DataError:
            fetch(task, Path(config.data_root), progress=not config.quiet)
    reporter = RichReporter(Console(stderr=True), quiet=config.quiet)
    rows = run(config, registry, reporter, resume=args.resume is not None)
    if not config.quiet and rows:
        references = get_task(registry, config.task).references if config.task else ()
        print_run(rows, config, references)
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def cmd_data(args: argparse.Namespace) -> int:
    """fetch: exit 2 on the first task that cannot be fetched (earlier ones are kept);
    verify: exit 1 when a file's hash differs; list: what is where."""
    from vaebench.datafetch import data_root, fetch, states
    from vaebench.registry import load_registry
    from vaebench.tasks import get_task

    registry = load_registry()
    root = data_root(args.data_root)
    names = getattr(args, "tasks", None) or registry.names("task")
    tasks = [get_task(registry, name) for name in names]  # an unknown name: before any work
    if args.action == "fetch":
        for task in tasks:
            report = fetch(task, root, timeout=args.timeout, progress=not args.quiet)
            got = f"downloaded {len(report.downloaded)}" if report.downloaded else "nothing new"
            print(f"{task.name}: {got}, {len(report.kept)} already verified, in {root}")
        return 0
    bad = 0
    named = bool(getattr(args, "tasks", None))  # verify NAME: its missing files count too
    for task in tasks:
        for state in states(task, root, hashing=args.action == "verify"):
            bad += state.state == "mismatch" or (named and state.state == "missing")
            detail = f" ({state.detail})" if state.detail else ""
            print(f"{task.name:<15} {state.state:<9} {state.path}{detail}")
    return 1 if bad else 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from vaebench.present.console import print_plugins
    from vaebench.registry import load_registry

    print_plugins(load_registry().rows(options=args.options), args.json)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from vaebench.present.console import print_tasks
    from vaebench.registry import load_registry
    from vaebench.tasks import get_task

    registry = load_registry()
    print_tasks([get_task(registry, name) for name in registry.names("task")], args.json)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaebench.io import check_output_file
    from vaebench.present.report import make_report
    from vaebench.registry import load_registry

    output = args.output or args.runs[0] / "report.html"
    check_output_file(output, "-o")
    html_path, md_path = make_report(list(args.runs), output, load_registry())
    print(f"report: {html_path}\nmarkdown: {md_path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from vaebench.io import check_writable
    from vaebench.present.console import print_cells, stdout
    from vaebench.registry import load_registry
    from vaebench.sweep import default_sweep_out, expand, load_sweep, run_sweep

    registry = load_registry()
    spec = load_sweep(args.file)
    cells = expand(spec, registry)
    executor = registry.get("executor", args.executor)
    if args.dry_run:
        print_cells(cells, list(spec.axes), f"{len(cells)} cells from {args.file}")
        return 0
    if args.resume and args.out is None:
        raise VaebenchError("--resume needs --out, the folder of the sweep to continue")
    folder = args.out or default_sweep_out()
    check_writable(folder, "--out")
    statuses: list[str] = []
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells, {task.fields[failed]} not ok"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("sweep", total=len(cells), failed=0)

        def on_done(result: dict) -> None:
            statuses.append(result["status"])
            failed = sum(status != "ok" for status in statuses)
            progress.update(task, advance=1, failed=failed)
            if result["status"] != "ok":
                progress.console.print(
                    f"vaebench: cell {result['cell_id']}: {result['status']}",
                    markup=False,
                    highlight=False,
                )

        sweep_frame, _summary = run_sweep(
            spec,
            cells,
            folder,
            lambda: executor.factory(workers=args.workers, address=args.ray_address),
            resume=args.resume,
            on_done=on_done,
        )
    bad = [s for s in sweep_frame.drop_duplicates("cell_id")["cell_status"] if s != "ok"]
    if not args.quiet:
        out = stdout()
        out.print(
            f"{len(cells)} cells ({len(statuses)} run now, {len(cells) - len(statuses)} already done); "
            f"{len(bad)} not ok"
        )
        out.print(f"per cell: {folder / 'sweep.csv'}\nover seeds: {folder / 'summary.csv'}")
    return 1 if bad else 0


def cmd_compare(args: argparse.Namespace) -> int:
    import math

    from vaebench.compare import compare_runs, parse_fraction
    from vaebench.present.console import print_comparison

    try:
        max_nll = float(args.max_nll_increase)
    except ValueError:
        max_nll = math.nan
    if not (math.isfinite(max_nll) and max_nll >= 0):
        raise ConfigError(
            f"--max-nll-increase: expected a number >= 0, got '{args.max_nll_increase}'"
        )
    try:
        alpha = float(args.alpha)
    except ValueError:
        alpha = math.nan
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha: expected a number between 0 and 1, got '{args.alpha}'")
    result = compare_runs(
        args.base,
        args.new,
        max_slowdown=parse_fraction(args.max_slowdown),
        max_nll_increase=max_nll,
        alpha=alpha,
    )
    thresholds = f"slowdown {args.max_slowdown}, NLL +{max_nll} nats, alpha {alpha:g}"
    print_comparison(result, f"{args.base} -> {args.new}", thresholds)
    return 1 if result.regressions else 0


COMMANDS = {
    "run": cmd_run,
    "data": cmd_data,
    "plugins": cmd_plugins,
    "tasks": cmd_tasks,
    "report": cmd_report,
    "compare": cmd_compare,
    "sweep": cmd_sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except VaebenchError as exc:
        print(f"vaebench: error: {exc}".replace("\n", "\\n"), file=sys.stderr)
        return 2
    except OSError as exc:  # a file system refusal we did not foresee: still one line
        line = f"vaebench: error: {exc.strerror or exc}: {exc.filename or ''}"
        print(line.replace("\n", "\\n"), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # finished models (or cells) are already on disk
        name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
        print(
            f"vaebench: interrupted ({name}); everything finished is kept on disk", file=sys.stderr
        )
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
