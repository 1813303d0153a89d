"""CLI command groups beyond the core ones in ``latentforge.cli``.

Each module here registers its commands on ``latentforge.cli.app`` (or ``plot_app``) at import;
``latentforge.cli`` imports every module of this package. Modules import their heavy
dependencies inside the command functions so that ``latentforge --help`` stays fast.
"""
