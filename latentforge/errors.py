"""The exception types latentforge raises for problems a user can fix.

Every public function raises one of these (never a bare ``ValueError`` from deep inside) for
bad input, so callers can catch one class per kind of problem. The CLI turns any of them into a
single line on stderr and exit status 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations


class LatentforgeError(Exception):
    """Base class: a problem with the user's input, configuration or files."""


class DataError(LatentforgeError):
    """A data source is missing, unreadable, corrupt, or does not fit what is asked of it."""


class DownloadError(DataError):
    """A dataset could not be downloaded, or the download failed its checksum."""


class ConfigError(LatentforgeError):
    """An unknown model, an unknown config key, or a value of the wrong type or range."""


class CheckpointError(LatentforgeError):
    """A run folder or checkpoint file is missing, truncated, tampered with or foreign."""


class TrainingError(LatentforgeError):
    """Training cannot go on (e.g. the loss became NaN/Inf)."""


class Interrupted(LatentforgeError):
    """Training was stopped by Ctrl-C (SIGINT). The checkpoint of the last completed epoch is
    kept; the message says where it is and how to resume. The CLI exits with status 130."""

    exit_code = 130
