"""What every peer script shares with ``compare.py``'s ``peer_row``, in one place: the arguments it
is given (``--out``, ``--seed``, ``--n``), the shared digits (``../shared/bench/mnist4k.py``: 3,600
to train on, 400 held out) and the files it leaves for ``compare.py`` to read (``OUT/result.json``,
and ``OUT/samples.npy`` for a generative peer). The standard library and numpy only: it runs in
every peer's own venv.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "shared" / "bench"))
from mnist4k import load  # noqa: E402


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by ``doc``'s first line, with compare.py's three arguments."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=1000, help="samples to draw (an autoencoder peer draws none)")
    return ap


def out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_result(out: Path, result: dict, samples: np.ndarray | None = None) -> None:
    """``OUT/result.json`` (and ``OUT/samples.npy``: (N, 28, 28) float32 in [0, 1], named in the
    result), echoed on stdout."""
    if samples is not None:
        np.save(out / "samples.npy", np.asarray(samples, np.float32))
        result = {**result, "samples": str(out / "samples.npy")}
    (out / "result.json").write_text(json.dumps(result))
    print(json.dumps(result))


__all__ = ["load", "parser", "out_dir", "write_result"]
