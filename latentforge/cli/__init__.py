"""The ``latentforge`` command line, one module per topic.

    app.py         the Typer app, the ``plot`` and ``experiment`` groups, ``main()`` (errors -> one line, exit 2)
    common.py      what commands share: the data options, loading data, checked output paths, JSON printing
    runs.py        models, datasets, info; encode, decode, reconstruct (a run applied to data)
    train.py       train (``train classifier`` too), train-classifier, demo
    classify.py    predict
    generate.py    generate, interpolate
    evaluate.py    evaluate
    score.py       score (anomaly scores)
    report.py      report, compare (HTML pages)
    plot.py        plot reconstructions | tsne | history | samples
    experiment.py  experiment pretraining | anomaly
    export.py      export;  explore.py: explore

Each topic module registers its commands on ``app`` (or ``plot_app``, ``experiment_app``) when it is
imported here, and imports its heavy dependencies inside the command functions, so that
``latentforge --help`` loads nothing but the CLI. Nothing outside this package imports it
(``pyproject.toml``, ``[tool.importlinter]``).
"""
from __future__ import annotations

from . import classify, evaluate, experiment, explore, export, generate, plot, report, runs, score, train  # noqa: F401  (they register their commands)
from .app import app, main

#: the order of ``latentforge --help``: the user's path from the registry to a trained run and its uses
#: (a command registered elsewhere and not named here comes after these, in registration order)
HELP_ORDER = ("models", "datasets", "train", "encode", "decode", "reconstruct", "info", "demo", "train-classifier",
              "predict", "evaluate", "explore", "export", "generate", "interpolate", "report", "compare", "score")


def _order_commands() -> None:
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    app.registered_commands.sort(key=lambda info: rank.get(info.name or "", len(rank)))


_order_commands()

__all__ = ["app", "main"]
