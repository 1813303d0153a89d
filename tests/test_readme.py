"""The README is tested: its Python snippets and every command of its command-line section run.

What is run, from README.md:

* every line of every plain fenced block (commands) of the "Command line" section (with its
  sub-sections) and of the "Export" section;
* every ``python`` fenced block of those sections and of "Python API", each in a fresh
  interpreter.

The commands run as written, on tiny data, with these substitutions (and nothing else):

* data that would be downloaded or that the README only names (``mnist``,
  ``../shared/data/mnist-4k``, ``my.npy``, ``cancer.csv``, ``my.toml``) -> small files made here:
  a 300-image stand-in in the MNIST format (the bundled 8x8 digits upscaled to 28x28, IDX with
  labels), a ``.npy`` of them, scikit-learn's breast-cancer table as a CSV with a header, a TOML
  config;
* training lengths: ``--epochs N`` -> 1 (2 with ``--resume``, which must go past the 1 done),
  ``train`` / ``demo`` without ``--epochs`` get ``--epochs 1``, ``--finetune-epochs N`` -> 1,
  ``--labeled 500`` -> 50 and ``--seeds 3`` -> 1 (``experiment``, with ``--ae-epochs 1 --epochs 2
  --freeze-epochs 1``), and in
  the Python snippets ``epochs=N`` / ``"epochs": N`` -> 1;
* ``[...]`` (optional options) are left out and ``a|b|c`` runs the command once per choice.

``NOT_RUN`` lists what cannot run here, with the reason. The default suite runs the Python
snippets and the cheap commands (``FAST``); ``-m slow`` runs every command in README order.
"""
from __future__ import annotations

import gzip
import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("Command line", "Export")             # their command blocks
PY_SECTIONS = ("Command line", "Python API", "Export")
NOT_RUN = {"tensorboard --logdir runs": "another program (TensorBoard's viewer), not latentforge",
           "pip install 'latentforge[explore]'": "installs packages (tests install nothing; make test installs the "
                                                 "explore extra)",
           **dict.fromkeys(("latentforge explore runs/sae runs/vae",
                            "latentforge explore runs/sae runs/vae --data ../shared/data/mnist-4k"),
                           "a server that runs until Ctrl-C: tests/test_explore.py starts the command and waits "
                           "for its `serving` line")}
N_TINY = 500                  # ~45 training images per class: a one-class run (--classes 3) fills a batch of 32


# ------------------------------------------------------------------------------ extraction
def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def _blocks(section: str) -> list[tuple[str, str]]:
    return re.findall(r"^```([a-z]*)\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def readme_commands() -> list[str]:
    text = README.read_text()
    out = []
    for title in SECTIONS:
        for lang, body in _blocks(_section(text, title)):
            if lang:
                continue
            for line in body.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):          # a comment line: what a command prints
                    out.append(line)
    return out


def readme_python() -> list[str]:
    text = README.read_text()
    return [body for title in PY_SECTIONS for lang, body in _blocks(_section(text, title)) if lang == "python"]


# ------------------------------------------------------------------------------ substitutions
def expand(line: str) -> list[str]:
    """``[...]`` left out; ``a|b|c`` (a word) once per choice."""
    line = re.sub(r"\s*\[[^\]]*\]", "", line)
    words = shlex.split(line)
    for i, w in enumerate(words):
        if "|" in w and not w.startswith("-"):
            return [" ".join(words[:i] + [choice] + words[i + 1:]) for choice in w.split("|")]
    return [line]


def tiny_argv(line: str, files: dict[str, Path]) -> list[str]:
    """The argv of a README command (without the program name) on tiny data, shorter training."""
    argv = shlex.split(line)
    assert argv[0] == "latentforge", line
    argv = argv[1:]
    for i, a in enumerate(argv[:-1]):
        if a in ("--data", "-d", "--config") and argv[i + 1] in files:
            argv[i + 1] = str(files[argv[i + 1]])
    resume = "--resume" in argv
    if "--epochs" in argv:
        argv[argv.index("--epochs") + 1] = "2" if resume else "1"
    elif argv[0] in ("train", "demo") and "--dry-run" not in argv and "--help" not in argv:
        argv += ["--epochs", "1"]
    for flag, value in (("--finetune-epochs", "1"), ("--labeled", "50"), ("--seeds", "1")):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    if argv[0] == "experiment":
        argv += ["--ae-epochs", "1", "--epochs", "2", "--freeze-epochs", "1"]
    return argv


def tiny_python(code: str) -> str:
    code = re.sub(r'("epochs":\s*)\d+', r"\g<1>1", code)
    return re.sub(r"(epochs=)\d+", r"\g<1>1", code)


def heavy(argv: list[str]) -> bool:
    """Commands left to the slow run: feature networks, DCGANs, DDPMs, t-SNE pages, exports, the demo."""
    return (argv[0] in ("demo", "report", "compare", "export", "experiment")
            or any(a in ("dcgan", "ddpm", "features", "--tensorboard", "--greedy", "runs/dcgan", "runs/ddpm")
                   for a in argv)
            or (argv[0] == "evaluate" and argv[1] == "runs/vae"))


# ------------------------------------------------------------------------------ tiny data
def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def make_files(root: Path) -> dict[str, Path]:
    from sklearn.datasets import load_breast_cancer, load_digits
    digits = load_digits()
    small = digits.images[:N_TINY] / 16.0
    big = np.zeros((N_TINY, 28, 28))
    big[:, 2:26, 2:26] = np.kron(small, np.ones((3, 3)))
    pixels = np.round(big * 255).astype(np.uint8)
    mnist = root / "mnist-tiny"
    mnist.mkdir()
    _idx(mnist / "train-images-idx3-ubyte.gz", pixels)
    _idx(mnist / "train-labels-idx1-ubyte.gz", digits.target[:N_TINY])
    npy = root / "my.npy"
    np.save(npy, (pixels / 255.0).astype(np.float32))
    cancer = load_breast_cancer()
    csv = root / "cancer.csv"
    header = ",".join([n.replace(" ", "_") for n in cancer.feature_names] + ["label"])
    np.savetxt(csv, np.column_stack([cancer.data, cancer.target]), delimiter=",", header=header,
               comments="", fmt="%.6g")
    toml = root / "my.toml"
    toml.write_text("hidden_sizes = [64]\ncoding_size = 8\nbatch_size = 32\n")
    return {"mnist": mnist, "../shared/data/mnist-4k": mnist, "my.npy": npy, "cancer.csv": csv,
            "my.toml": toml}


@pytest.fixture
def readme_dir(tmp_path, monkeypatch):
    files = make_files(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("LATENTFORGE_DATA", str(tmp_path / "cache"))
    return work, files


def planned(files: dict[str, Path]) -> list[tuple[str, list[str] | None]]:
    """Every README command with its argv on tiny data (None: in NOT_RUN)."""
    plan = []
    for line in readme_commands():
        if line in NOT_RUN:
            plan.append((line, None))
            continue
        for one in expand(line):
            plan.append((one, tiny_argv(one, files)))
    return plan


def _run_all(run_cli, files, keep) -> list[str]:
    ran = []
    for line, argv in planned(files):
        if argv is None or not keep(argv):
            continue
        code, _, err = run_cli(*argv)
        assert code == 0, f"README command failed: {line}\n  ran: latentforge {' '.join(argv)}\n{err[-2000:]}"
        ran.append(line)
    return ran


# ------------------------------------------------------------------------------ tests
def test_every_readme_command_is_run_or_listed_with_a_reason(tmp_path):
    """No command escapes: each is a latentforge command that the substitutions make concrete,
    or is listed in NOT_RUN; the fast subset covers every command group but the heavy ones."""
    files = make_files(tmp_path)
    plan = planned(files)
    assert len(plan) >= 35
    for line, argv in plan:
        if argv is None:
            assert NOT_RUN[line]
            continue
        placeholders = [a for a in argv if a in ("N", "K", "SRC", "RUN_DIR", "DIR", "PATH") or "|" in a]
        assert not placeholders, f"{line}: placeholders left: {placeholders}"
    assert set(NOT_RUN) <= {line for line in readme_commands()}, "NOT_RUN names a command the README lost"
    fast = {argv[0] for _, argv in plan if argv is not None and not heavy(argv)}
    assert {"models", "datasets", "train", "encode", "decode", "reconstruct", "info", "plot",
            "generate", "interpolate", "evaluate", "predict"} <= fast


def test_readme_python_snippets_run(tmp_path):
    """Each Python block of the README in a fresh interpreter (epochs -> 1)."""
    snippets = readme_python()
    assert len(snippets) >= 3
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LATENTFORGE_DATA": str(tmp_path / "cache"),
           "MPLBACKEND": "Agg"}
    for i, code in enumerate(snippets):
        work = tmp_path / f"py{i}"
        work.mkdir()
        r = subprocess.run([sys.executable, "-c", tiny_python(code)], cwd=work, env=env, check=False,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README Python block {i + 1} failed:\n{code}\n{r.stderr[-3000:]}"
    assert (tmp_path / "py1" / "digits.png").exists() or any(
        (tmp_path / f"py{i}" / "digits.png").exists() for i in range(len(snippets)))


def test_readme_commands_fast_subset(readme_dir, run_cli):
    work, files = readme_dir
    ran = _run_all(run_cli, files, keep=lambda argv: not heavy(argv))
    assert len(ran) >= 20
    assert (work / "samples" / "samples.npy").exists() and list((work / "samples").glob("sample_*.png"))
    assert (work / "runs" / "tab" / "checkpoint.safetensors").exists()


@pytest.mark.slow
def test_readme_commands_all(readme_dir, run_cli):
    work, files = readme_dir
    ran = _run_all(run_cli, files, keep=lambda argv: True)
    assert len(ran) == sum(argv is not None for _, argv in planned(files))
    assert (work / "compare.html").exists() and (work / "runs" / "vae" / "report.html").exists()
