"""The ``latentforge`` command line: the Typer app, its groups (``plot``, ``experiment``) and
:func:`main`, which turns every user error into one line on stderr.

Every mistake a user can make (unknown model or dataset, a bad file, a bad ``--set``) ends with
one line on stderr and exit status 2; ``--debug`` shows the traceback instead.
The commands themselves live in the modules beside this one, one per topic; they register on
``app``, ``plot_app`` or ``experiment_app`` when ``latentforge.cli`` imports them.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from .._version import __version__
from ..errors import LatentforgeError
from .common import _INVOCATION

app = typer.Typer(
    name="latentforge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Autoencoders, VAEs, GANs and diffusion models of the classic chapter: train, inspect, reuse.\n\n"
         "Start with `latentforge demo`, `latentforge models` and `latentforge train stacked-ae --data digits`.",
    context_settings={"help_option_names": ["-h", "--help"]})
plot_app = typer.Typer(help="Figures of a run: reconstructions, t-SNE map of the codings, loss curves.",
                       no_args_is_help=True)
app.add_typer(plot_app, name="plot")

experiment_app = typer.Typer(help="Reproduce the chapter's experiments and exercises end to end.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

_DEBUG = False


def _err(msg: str) -> None:
    print(f"latentforge: error: {msg}", file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        print(f"latentforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    global _DEBUG
    _DEBUG = _DEBUG or debug


def _flags_without_type() -> None:
    """Show on/off flags (--resume, --dry-run, --help...) without a ``<bool>`` type in the help: they
    take no value. (typer prints every option's type; a flag's says nothing.)"""
    try:
        from typer.core import TyperOption
    except ImportError:          # another typer: its own help layout
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)
    TyperOption.display_type_rich = display_type_rich


_flags_without_type()


def _click_exceptions():
    """click's exception module (typer >= 0.2x vendors click as ``typer._click``)."""
    try:
        from typer._click import exceptions
    except ImportError:   # older typer depends on click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the CLI, turning user errors into one line on stderr and exit status 2.

    Usage errors (unknown command or option, a bad value for a typed option) are also one line
    and exit status 2 (typer runs in non-standalone mode so that they reach this function).
    """
    global _DEBUG
    if "torch" not in sys.modules:      # OpenMP reads it once, when PyTorch loads (see engine/threads.py)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    _INVOCATION[:] = args
    _DEBUG = "--debug" in args or bool(os.environ.get("LATENTFORGE_DEBUG"))
    ex = _click_exceptions()
    try:
        rc = app(args=args, prog_name="latentforge", standalone_mode=False)
        if rc == 130:                                   # Ctrl-C outside training (typer's Exit(130))
            _err("interrupted")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ex.NoArgsIsHelpError as e:                   # `latentforge`, `latentforge plot`: the help
        e.show()
        sys.exit(e.exit_code)
    except ex.ClickException as e:                      # unknown command/option, bad option value
        where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "latentforge"
        _err(" ".join(f"{e.format_message()} (see `{where} --help`)".split()))
        sys.exit(e.exit_code)
    except typer.Abort:
        _err("aborted")
        sys.exit(1)
    except LatentforgeError as e:
        if _DEBUG:
            raise
        if getattr(e, "collective", False):      # every process raised it: process 0 reports it
            from ..train.distributed import report_once
            msg = str(e)
            report_once(lambda: _err(msg))
        else:
            _err(str(e))
        sys.exit(getattr(e, "exit_code", 2))     # errors.Interrupted (Ctrl-C in training): 130
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except OSError as e:
        if _DEBUG:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _err(f"{where}{e.strerror or e}")
        sys.exit(2)
