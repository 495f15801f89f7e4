"""Command line: ``vaebench run``, ``plugins``, ``report``, ``compare`` and ``sweep``.

Parses arguments into a config, prints, and sets exit codes: 0 done, 1 some model failed
or diverged, 2 unusable input (unknown names, bad numbers, unreadable data).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vaebench import __version__
from vaebench.config import RunConfig, parse_options
from vaebench.errors import VaebenchError
from vaebench.kernels import BACKENDS


def _bounded(cast: type, *, low: float, strict: bool = False, what: str):
    """An argparse type: ``cast(text)``, finite and >= ``low`` (> ``low`` when ``strict``)."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>' if strict else '>='} {low}, got {text}"
            )
        return value

    return parse


_positive_int = _bounded(int, low=1, what="a whole number")
_non_negative_int = _bounded(int, low=0, what="a whole number")
_positive_float = _bounded(float, low=0, strict=True, what="a number")


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more comma-separated names")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    parser = argparse.ArgumentParser(
        prog="vaebench",
        description="Train, evaluate and time VAEs assembled from plugins; report, compare and sweep them.",
    )
    parser.add_argument("--version", action="version", version=f"vaebench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="train, evaluate and time VAEs",
        description="Train, evaluate and time every plugin x prior combination.",
    )
    run.add_argument(
        "--plugins",
        type=_name_list,
        default=defaults.plugins,
        help="encoder/decoder families, comma-separated (default: %(default)s)",
    )
    run.add_argument(
        "--prior",
        dest="priors",
        type=_name_list,
        default=defaults.priors,
        help="priors, comma-separated (default: normal)",
    )
    run.add_argument(
        "--model",
        dest="models",
        type=_name_list,
        default=defaults.models,
        help="objectives, comma-separated: vae, iwae, ae, dae, sae (default: vae); AE-family rows use N(0, I) for samples",
    )
    run.add_argument(
        "--beta",
        type=_bounded(float, low=0, what="a number"),
        default=defaults.beta,
        help="KL weight of the vae objective (default: 1)",
    )
    run.add_argument(
        "--kl-warmup",
        type=_non_negative_int,
        default=defaults.kl_warmup,
        help="epochs of linear KL warm-up for vae (default: 0)",
    )
    run.add_argument(
        "--corruption",
        type=_bounded(float, low=0, what="a number"),
        default=defaults.corruption,
        help="fraction of input values zeroed by dae (default: %(default)s)",
    )
    run.add_argument(
        "--sparsity",
        type=_bounded(float, low=0, what="a number"),
        default=defaults.sparsity,
        help="L1 weight on the code for sae (default: %(default)s)",
    )
    run.add_argument(
        "--iwae-samples",
        type=_positive_int,
        default=defaults.iwae_samples,
        help="K of the iwae training objective (default: %(default)s)",
    )
    run.add_argument(
        "--prior-option",
        "-P",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option for the priors, e.g. -P components=10 (mog), -P pseudo_inputs=50 (vamp), -P transforms=3 (flow)",
    )
    run.add_argument(
        "--likelihood-option",
        "-L",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option for the likelihood, e.g. -L sigma=0.1 (gaussian), -L bins=256 (categorical)",
    )
    run.add_argument(
        "--dataset",
        default=defaults.dataset,
        help="a registered dataset name, a .npz file or a folder of MNIST IDX files (default: %(default)s)",
    )
    run.add_argument(
        "--dataset-option",
        "-D",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option passed to a named dataset, e.g. -D n_train=256 for synthetic",
    )
    run.add_argument(
        "--likelihood",
        default=defaults.likelihood,
        help="observation model; auto = bernoulli for [0, 1] data, gaussian otherwise",
    )
    run.add_argument("--latent-dim", type=_positive_int, default=defaults.latent_dim)
    run.add_argument("--epochs", type=_positive_int, default=defaults.epochs)
    run.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    run.add_argument("--lr", type=_positive_float, default=defaults.lr)
    run.add_argument("--seed", type=_non_negative_int, default=defaults.seed)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device)
    run.add_argument(
        "--kernel",
        choices=BACKENDS,
        default=defaults.kernel,
        help="reparameterization + KL backend (default: %(default)s)",
    )
    run.add_argument(
        "--iw-samples",
        type=_positive_int,
        default=defaults.iw_samples,
        help="K for the importance-weighted NLL (default: %(default)s)",
    )
    run.add_argument(
        "--timing-min-time",
        type=_positive_float,
        default=defaults.timing_min_time,
        help="seconds of timed repeats per throughput figure (default: %(default)s)",
    )
    run.add_argument("--out", default=None, help="output folder (default: a new runs/<timestamp>)")
    run.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")

    plugins = commands.add_parser("plugins", help="list every registered component")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    report = commands.add_parser(
        "report",
        help="write an HTML report and its Markdown twin from run folders",
        description="One self-contained HTML file (figures embedded) and report.md with PNGs beside it.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
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
        help="local (a process pool, default) or ray, or one a plugin adds",
    )
    sweep.add_argument(
        "--workers", type=_positive_int, default=1, help="cells run at once (default: %(default)s)"
    )
    sweep.add_argument(
        "--out", type=Path, default=None, help="sweep folder (default: a new sweeps/<timestamp>)"
    )
    sweep.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out, skipping finished cells"
    )
    sweep.add_argument("--dry-run", action="store_true", help="print the expanded cells and stop")
    sweep.add_argument(
        "--ray-address",
        default=None,
        help="address of a running Ray cluster (default: start a local one)",
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
        type=_bounded(float, low=0, what="a number"),
        default=1.0,
        help="largest tolerated IW-NLL rise in nats (default: %(default)s)",
    )
    return parser


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from vaebench.console import RichReporter, generative_table, quality_table, throughput_table
    from vaebench.registry import load_registry
    from vaebench.runner import run

    registry = load_registry()
    config = RunConfig(
        plugins=args.plugins,
        priors=args.priors,
        dataset=args.dataset,
        dataset_options=parse_options(args.dataset_option),
        models=args.models,
        prior_options=parse_options(args.prior_option, "--prior-option"),
        likelihood_options=parse_options(args.likelihood_option, "--likelihood-option"),
        beta=args.beta,
        kl_warmup=args.kl_warmup,
        corruption=args.corruption,
        sparsity=args.sparsity,
        iwae_samples=args.iwae_samples,
        likelihood=args.likelihood,
        latent_dim=args.latent_dim,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        kernel=args.kernel,
        iw_samples=args.iw_samples,
        timing_min_time=args.timing_min_time,
        out=args.out,
        quiet=args.quiet,
    ).resolve(registry)
    rows = run(config, registry, RichReporter(console, quiet=config.quiet))
    if not config.quiet and rows:
        first = rows[0]
        out = Console(width=None if sys.stdout.isatty() else 160)
        out.print(
            quality_table(
                rows,
                f"Quality on {first['dataset']} test split (nats per example, likelihood {first['likelihood']}, "
                f"K={config.iw_samples}; 'untrained' is -ELBO, or reconstruction for the AE family, before training)",
            )
        )
        out.print(
            generative_table(
                rows,
                "Prior samples and latent space (FD: Frechet distance of classifier features, test images vs "
                "decoded prior samples, lower is better; MMD: aggregate posterior vs prior)",
            )
        )
        if any(row.get("family") == "ae" for row in rows):
            out.print(
                "AE-family rows (ae, dae, sae) train without a prior: one row each per plugin, with "
                "prior 'normal', meaning their 'prior samples' are decoded N(0, I) draws."
            )
        note = ""
        if config.device == "cpu" and first["kernel_backend"] == "triton":
            note = "; triton runs through its CPU interpreter here: a correctness path, not a speed figure"
        out.print(
            throughput_table(
                rows,
                f"Throughput on {config.device} ({first.get('timing_batch_size', '?')} examples per call, "
                f"median of repeats, kernel {first['kernel_backend']}{note})",
            )
        )
        out.print(f"results: {Path(config.out) / 'results.csv'}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    from vaebench.registry import load_registry

    rows = load_registry().rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="vaebench components")
    for column in ("kind", "name", "distribution", "version", "plugin"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(row[c] for c in ("kind", "name", "distribution", "version", "plugin")))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from vaebench.registry import load_registry
    from vaebench.report import make_report

    output = args.output or args.runs[0] / "report.html"
    html_path, md_path = make_report(list(args.runs), output, load_registry())
    print(f"report: {html_path}\nmarkdown: {md_path}")
    return 0


def cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from vaebench.registry import load_registry
    from vaebench.sweep import default_sweep_out, expand, load_sweep, run_sweep

    registry = load_registry()
    spec = load_sweep(args.file)
    cells = expand(spec, registry)
    executor = registry.get("executor", args.executor)
    out = Console(width=None if sys.stdout.isatty() else 160)
    if args.dry_run:
        table = Table(title=f"{len(cells)} cells from {args.file}", title_justify="left")
        table.add_column("cell")
        for axis in spec.axes:
            table.add_column(axis)
        for cell in cells:
            table.add_row(cell.cell_id, *(json.dumps(cell.axes[a]) for a in spec.axes))
        out.print(table)
        return 0
    if args.resume and args.out is None:
        raise VaebenchError("--resume needs --out, the folder of the sweep to continue")
    folder = args.out or default_sweep_out()
    statuses: list[str] = []
    with Progress(console=console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task(f"sweep of {len(cells)} cells", total=len(cells))

        def on_done(result: dict) -> None:
            statuses.append(result["status"])
            progress.advance(task)
            if result["status"] != "ok":
                print(f"vaebench: cell {result['cell_id']}: {result['status']}", file=sys.stderr)

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
        out.print(
            f"{len(cells)} cells ({len(statuses)} run now, {len(cells) - len(statuses)} already done); "
            f"{len(bad)} not ok"
        )
        out.print(f"per cell: {folder / 'sweep.csv'}\nover seeds: {folder / 'summary.csv'}")
    return 1 if bad else 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from vaebench.compare import compare_runs, parse_fraction
    from vaebench.console import comparison_table

    result = compare_runs(
        args.base,
        args.new,
        max_slowdown=parse_fraction(args.max_slowdown),
        max_nll_increase=args.max_nll_increase,
    )
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(comparison_table(result.table, f"{args.base} -> {args.new}"))
    for name in result.only_in_base:
        print(f"only in base: {name}")
    for name in result.only_in_new:
        print(f"only in new: {name}")
    for line in result.regressions:
        print(f"REGRESSION {line}")
    if not result.regressions:
        print(
            f"no regression (thresholds: slowdown {args.max_slowdown}, NLL +{args.max_nll_increase} nats)"
        )
    return 1 if result.regressions else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    handlers = {
        "run": cmd_run,
        "plugins": cmd_plugins,
        "report": cmd_report,
        "compare": cmd_compare,
        "sweep": cmd_sweep,
    }
    try:
        return handlers[args.command](args, console)
    except VaebenchError as exc:
        print(f"vaebench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaebench: interrupted; results of finished models are kept on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
