"""Load: encode / reconstruct / generate stream any number of images with bounded memory.

A ``.npy`` input is read in row chunks (:class:`~latentforge.data.readers.NpyStream`) and the
output is written batch by batch into a temporary file renamed over ``--out`` at the end
(:class:`~latentforge.train.checkpoint.NpyWriter`). The tests run the CLI in a subprocess on
float32 784-dim data and compare its peak resident memory (VmHWM) at two sizes: it must not grow
with n. The default test uses 5k vs 50k images (the 45k extra images are 141 MB
of float32: an in-memory implementation grows by at least that); the slow one goes to 1,000,000.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
D = 784

# peak RSS of this process from /proc (VmHWM): ru_maxrss would include the parent's peak on Linux,
# since it survives fork + exec
MEASURE = """
import json, re, sys
from latentforge.cli import main
codes = []
for args in json.loads(sys.argv[1]):      # several commands in one process: one start-up
    try:
        main(args)
    except SystemExit as e:
        codes.append(e.code)
    else:
        codes.append(0)
hwm = re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read())
print(json.dumps({"codes": codes, "maxrss_mb": int(hwm.group(1)) / 1024}))
"""


def _make_npy(path: Path, n: int, chunk: int = 50_000) -> Path:
    """n random float32 (n, 784) images in [0, 1], written in chunks (never all in memory)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))
    rng = np.random.default_rng(0)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        arr[i:i + m] = rng.random((m, D), dtype=np.float32)
    arr.flush()
    del arr
    return path


def _cli(*commands: list) -> dict:
    """Run CLI commands in one fresh process; its peak resident memory (VmHWM, which unlike
    ru_maxrss does not inherit the parent's peak across fork + exec)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmds = json.dumps([[str(a) for a in c] for c in commands])
    r = subprocess.run([sys.executable, "-c", MEASURE, cmds], capture_output=True, text=True, env=env, timeout=3000)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["codes"] == [0] * len(commands), r.stderr
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from latentforge.data import Dataset
    from latentforge.train import train
    root = tmp_path_factory.mktemp("stream")
    x = np.random.default_rng(1).random((256, D), dtype=np.float32)
    ds = Dataset(x=x, y=None, name="rand784", sample_shape=(D,), is_image=False)
    quiet = {"log": lambda m: None, "progress": False, "device": "cpu"}
    train("stacked-ae", ds, out=root / "ae", overrides={"hidden_sizes": [16], "coding_size": 4, "epochs": 1}, **quiet)
    train("gan", ds, out=root / "gan", overrides={"g_hidden_sizes": [16], "d_hidden_sizes": [16], "coding_size": 4,
                                                    "epochs": 1, "sample_every": 0}, **quiet)
    return root


def _growth(runs: Path, tmp: Path, small: int, big: int) -> dict:
    from latentforge.train import load_run
    grow = {}
    for n in (small, big):
        data = _make_npy(tmp / f"x{n}.npy", n)
        codes, rec, gen = tmp / f"codes{n}.npy", tmp / f"rec{n}.npy", tmp / f"gen{n}.npy"
        # batches of 1024 rows (3 MB): the allocator's working set settles within the small n
        grow[n] = _cli(["encode", runs / "ae", "--data", data, "--out", codes, "-b", 1024],
                       ["reconstruct", runs / "ae", "--data", data, "--out", rec, "-b", 1024],
                       ["generate", runs / "gan", "-n", n, "--out", gen, "-b", 1024])["maxrss_mb"]
        # the outputs are right: shapes, and rows equal to in-memory inference on the same rows
        run = load_run(runs / "ae")
        x = np.load(data, mmap_mode="r")
        z, r, g = (np.load(p, mmap_mode="r") for p in (codes, rec, gen))
        assert z.shape == (n, 4) and r.shape == (n, D) and g.shape == (n, D)
        for rows in (slice(0, 100), slice(n - 100, n)):
            assert np.allclose(z[rows], run.encode(np.array(x[rows])), atol=1e-6)
            assert np.allclose(r[rows], run.reconstruct(np.array(x[rows])), atol=1e-6)
        assert np.isfinite(g[-100:]).all() and g[-100:].min() >= 0 and g[-100:].max() <= 1
        assert not list(tmp.glob(".*.tmp")), "temporary output files left behind"
        for p in (data, codes, rec, gen):
            p.unlink()
    return {"peak_mb": grow, "growth_mb": grow[big] - grow[small]}


def test_memory_does_not_grow_with_n(runs, tmp_path):
    res = _growth(runs, tmp_path, 5_000, 50_000)
    print("encode + reconstruct + generate, peak RSS (MB):", res)
    # 45k more float32 784-dim images are 141 MB: reading or writing them whole would add that
    assert res["growth_mb"] < 40, res


@pytest.mark.slow
def test_one_million_images(runs, tmp_path):
    res = _growth(runs, tmp_path, 10_000, 1_000_000)
    print("encode + reconstruct + generate, peak RSS (MB):", res)
    assert res["growth_mb"] < 60, res                             # the data itself is 3,136 MB


def test_stream_matches_in_memory_and_failure_leaves_nothing(runs, tmp_path, run_cli):
    """The streamed output equals the in-memory path (3-D images too); a bad value found while
    validating leaves no output file."""
    from latentforge.data.readers import NpyStream
    from latentforge.train import load_run
    x = np.random.default_rng(2).random((300, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    s = NpyStream(tmp_path / "x.npy", chunk_bytes=10_000)        # many chunks
    assert s.shape == (300, 1, 28, 28) and len(s) == 300 and s.sample_shape == (28, 28)
    assert np.array_equal(s[17:123], x[17:123, None]) and s.min() == x.min() and s.max() == x.max()
    code, _, err = run_cli("reconstruct", runs / "ae", "--data", tmp_path / "x.npy", "--out", tmp_path / "r.npy",
                           "--batch-size", "64")
    assert code == 0, err
    r = np.load(tmp_path / "r.npy")
    assert r.shape == (300, 28, 28)
    assert np.allclose(r.reshape(300, -1), load_run(runs / "ae").reconstruct(x.reshape(300, -1)), atol=1e-6)
    u8 = (x * 255).astype(np.uint8)                              # integers are scaled by 1/255 as in load_data
    np.save(tmp_path / "u8.npy", u8)
    assert run_cli("encode", runs / "ae", "--data", tmp_path / "u8.npy", "--out", tmp_path / "c.npy")[0] == 0
    assert np.allclose(np.load(tmp_path / "c.npy"),
                       load_run(runs / "ae").encode((u8 / np.float32(255)).reshape(300, -1)), atol=1e-6)
    x[250, 3, 3] = np.nan
    np.save(tmp_path / "bad.npy", x)
    code, _, err = run_cli("encode", runs / "ae", "--data", tmp_path / "bad.npy", "--out", tmp_path / "o.npy")
    assert code == 2 and "(250, 3, 3)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.npy").exists() and not list(tmp_path.glob(".*.tmp"))


def test_writer_is_atomic(tmp_path):
    from latentforge.train.checkpoint import NpyWriter
    path = tmp_path / "o.npy"
    np.save(path, np.arange(3))
    with pytest.raises(RuntimeError):
        with NpyWriter(path, 10) as w:
            w.write(np.ones((4, 2), np.float32))
            raise RuntimeError("killed halfway")
    assert np.array_equal(np.load(path), np.arange(3)) and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="4 rows written of 10"):
        with NpyWriter(path, 10) as w:
            w.write(np.ones((4, 2), np.float32))
    assert np.array_equal(np.load(path), np.arange(3))
    with NpyWriter(path, 5, (2,)) as w:
        w.write(np.ones((2, 2), np.float32))
        w.write(torch.zeros(3, 2).numpy())
    assert np.load(path).tolist() == [[1, 1]] * 2 + [[0, 0]] * 3
