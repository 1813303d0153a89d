"""The exception types latentforge raises for problems a user can fix.

Every public function raises one of these (never a bare ``ValueError`` from deep inside) for
bad input, so callers can catch one class per kind of problem. The CLI turns any of them into a
single line on stderr and exit status 2 (``--debug`` shows the traceback).

Which class for which problem:

=====================  =======================================================================
``DataError``          a data source: missing path, unknown built-in name, unsupported format,
                       corrupt/truncated gzip, wrong IDX magic or type code, header sizes that
                       disagree with the bytes, labels vs samples count, NaN/Inf, integers
                       outside [0, 255], empty arrays/folders, undecodable or differently sized
                       images, non-numeric or ragged CSV, pickled ``.npy``; data that does not fit
                       the run (shape, values outside [0, 1] for a sigmoid model); an output path
                       that cannot be written.
``DownloadError``      (a ``DataError``) a download failed, or its checksum did not match (the
                       file is deleted).
``ConfigError``        an unknown model, config key or option value; a value of the wrong type or
                       out of range (negative lr, zero epochs, batch larger than the data); a bad
                       config file; a run folder that exists (no ``--resume``/``--overwrite``);
                       a command that does not apply to the run's model.
``CheckpointError``    a run folder or checkpoint that is missing, truncated, tampered with
                       (shapes, dtypes, missing/extra tensors, optimizer/RNG/trainer state) or
                       not a latentforge checkpoint; the message names the tensor.
``TrainingError``      training cannot go on: the loss became NaN/Inf (``--nan-policy``).
``Interrupted``        Ctrl-C during training (CLI exit status 130); the last completed epoch's
                       checkpoint is kept and the message says how to resume.
=====================  =======================================================================
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


def collective(error: LatentforgeError) -> LatentforgeError:
    """Mark ``error`` as raised by every process of a multi-process run at once (e.g. the NaN
    guard, which decides collectively): the CLI of process 0 alone reports it."""
    error.collective = True
    return error


class Interrupted(LatentforgeError):
    """Training was stopped by Ctrl-C (SIGINT). The checkpoint of the last completed epoch is
    kept; the message says where it is and how to resume. The CLI exits with status 130."""

    exit_code = 130
