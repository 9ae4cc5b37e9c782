"""The `unlearn` command line. One file per command; errors are handled here, once.

Exit codes: 0 success; 1 a known error (one line on stderr, no traceback unless
--debug); 2 a usage error (the command line could not be parsed); 3 an `eval`
gate failed; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from unlearn_cli import __version__
from unlearn_cli.cli import (
    covariance,
    demo,
    export,
    forget,
    log,
    prune,
    retire,
    shadows,
    storage_report,
    train,
    verify,
)
from unlearn_cli.cli import eval as eval_
from unlearn_cli.cli import list as list_
from unlearn_cli.cli.console import err, flags
from unlearn_cli.cli.progress import MODES
from unlearn_cli.errors import InvalidParameterError, UnlearnError

app = typer.Typer(
    name="unlearn",
    help="Machine unlearning for PyTorch image classifiers: train with recorded updates, "
    "then forget samples on request.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"unlearn {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Only print results, warnings and errors."
    ),
    progress: str = typer.Option(
        "auto",
        "--progress",
        help="auto (a bar on a terminal, plain lines otherwise), bar, log or none.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    flags.debug = debug or os.environ.get("UNLEARN_DEBUG") == "1"
    flags.quiet = quiet
    if progress not in MODES:
        raise InvalidParameterError(
            f"--progress must be one of {', '.join(MODES)}. Got {progress!r} instead."
        )
    flags.progress = progress


app.command("train")(train.train)
app.command("forget")(forget.forget)
app.command("eval")(eval_.eval_cmd)
app.command("prune")(prune.prune)
app.command("covariance")(covariance.covariance)
app.command("shadows")(shadows.shadows)
app.command("export")(export.export)
app.command("storage-report")(storage_report.storage_report)
app.command("log")(log.log)
app.command("retire")(retire.retire)
app.command("verify")(verify.verify)
app.command("list")(list_.list_things)
app.command("demo")(demo.demo)


ROOT_FLAGS = ("--debug", "--quiet", "-q")  # the root options, also taken after the command
ROOT_VALUED = ("--progress",)


def hoist_root_options(args: list[str]) -> list[str]:
    """`unlearn train --progress none ...` as `unlearn --progress none train ...`: the root
    options (declared once, on the app) are moved before the command wherever they are,
    up to a `--` (after which everything is an argument)."""
    if "--" in args:
        cut = args.index("--")
        return hoist_root_options(args[:cut]) + args[cut:]
    front, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in ROOT_FLAGS or any(arg.startswith(f"{o}=") for o in ROOT_VALUED):
            front.append(arg)
        elif arg in ROOT_VALUED and i + 1 < len(args):
            front += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map every outcome to an exit code."""
    flags.debug, flags.quiet, flags.progress = False, False, "auto"
    flags.argv = tuple(sys.argv[1:] if argv is None else argv)
    args = hoist_root_options(list(flags.argv))
    try:
        result = app(args=args, prog_name="unlearn", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors (exit 2): unknown option, bad type
        show = getattr(exc, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            err.print(f"error: {exc.format_message()}", markup=False)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort) as exc:
        # Click turns an EOFError escaping a command into Abort too: that is no interrupt.
        if isinstance(exc, typer.Abort) and isinstance(exc.__cause__, EOFError):
            return report(UnlearnError(f"unexpected end of a file or input ({exc.__cause__})"))
        err.print("error: interrupted")
        return 130
    except UnlearnError as exc:
        return report(exc)
    except OSError as exc:  # the environment, not a bug: disk full, read-only, permissions
        where = f": {exc.filename}" if exc.filename else ""
        hint = (
            "check free disk space and permissions there (for a URL: that the bucket exists "
            "and your credentials may use it), then run it again"
        )
        return report(UnlearnError(f"{exc.strerror or exc}{where}.", hint=hint))


def report(exc: UnlearnError) -> int:
    """One line on stderr (the traceback too with --debug); the error's exit code."""
    if flags.debug:
        traceback.print_exc()
    hint = f" ({exc.hint})" if exc.hint else ""
    err.print(f"error: {exc.message}{hint}", markup=False, highlight=False)
    return exc.exit_code
