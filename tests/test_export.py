"""`latentforge export`: ONNX (run by onnxruntime) and TorchScript files reproduce the PyTorch model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentforge.data import Dataset
from latentforge.errors import ConfigError
from latentforge.export import available_parts, export_part
from latentforge.train import load_run, train

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'latentforge[export]')")

TINY = {
    "stacked-ae": {"hidden_sizes": [16], "coding_size": 4},
    "conv-ae": {"filters": [4, 8]},
    "vae": {"hidden_sizes": [16], "coding_size": 3},
    "dcgan": {"coding_size": 8, "g_channels": 8, "d_channels": 4, "sample_every": 0},
}
SLOW = pytest.mark.slow
CASES = [("stacked-ae", "encoder"), pytest.param("stacked-ae", "decoder", marks=SLOW),
         pytest.param("conv-ae", "encoder", marks=SLOW), pytest.param("conv-ae", "decoder", marks=SLOW),
         ("vae", "decoder"), pytest.param("vae", "generator", marks=SLOW), ("dcgan", "generator")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run folder per model, on 48 random 8x8 images."""
    rng = np.random.default_rng(0)
    x = rng.random((48, 1, 8, 8)).astype(np.float32)
    ds = Dataset(x=x, y=None, name="tiny", sample_shape=(1, 8, 8), is_image=True)
    base = tmp_path_factory.mktemp("runs")
    return {name: train(name, ds, out=base / name, overrides={"epochs": 1, "batch_size": 16, **over},
                        progress=False, log=lambda m: None, device="cpu").run_dir
            for name, over in TINY.items()}


def _reference(run, part: str, x: np.ndarray) -> np.ndarray:
    """What the run computes in PyTorch (in the data's units)."""
    if part == "encoder":
        return run.encode(x)
    return run.batched(run.model.decode, x, 4096)


def _inputs(run, part: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    if part == "encoder":
        return rng.random((n, *run.model.input_shape)).astype(np.float32)
    codes = run.encode(rng.random((2, *run.model.input_shape)).astype(np.float32)) if part == "decoder" else None
    width = codes.shape[1] if codes is not None else run.model.config.coding_size
    return rng.standard_normal((n, width)).astype(np.float32)


@pytest.mark.parametrize("name,part", CASES)
def test_onnx_and_torchscript_match_pytorch(runs, tmp_path, name, part):
    run = load_run(runs[name])
    onnx_file, ts_file = tmp_path / f"{part}.onnx", tmp_path / f"{part}.pt"
    export_part(run.model, part, "onnx", onnx_file, name=name)
    export_part(run.model, part, "torchscript", ts_file, name=name)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = {"encoder": ("x", "codes"), "decoder": ("codes", "x"), "generator": ("z", "x")}[part]
    assert (session.get_inputs()[0].name, session.get_outputs()[0].name) == names
    scripted = torch.jit.load(str(ts_file))
    for n in (1, 5, 33):                                   # the batch axis is dynamic
        x = _inputs(run, part, n)
        want = _reference(run, part, x)
        got_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            got_ts = scripted(torch.from_numpy(x)).numpy()
        assert got_onnx.shape == want.shape == got_ts.shape
        np.testing.assert_allclose(got_onnx, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_ts, want, rtol=1e-4, atol=1e-5)
        assert np.abs(want).max() > 0                      # a real output, not zeros


def test_available_parts(runs):
    assert available_parts(load_run(runs["stacked-ae"]).model) == ["encoder", "decoder"]
    assert available_parts(load_run(runs["vae"]).model) == ["encoder", "decoder", "generator"]
    assert available_parts(load_run(runs["dcgan"]).model) == ["generator"]


@pytest.mark.parametrize("name,part,fmt,msg", [
    ("dcgan", "encoder", "onnx", "has no encoder"),
    ("stacked-ae", "generator", "torchscript", "has no generator"),
    ("stacked-ae", "middle", "onnx", "--part 'middle'"),
    ("stacked-ae", "encoder", "tflite", "--format 'tflite'"),
])
def test_missing_part_or_bad_format_is_a_config_error(runs, tmp_path, name, part, fmt, msg):
    with pytest.raises(ConfigError, match=msg):
        export_part(load_run(runs[name]).model, part, fmt, tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_cli(runs, tmp_path, run_cli):
    out = tmp_path / "g.pt"
    code, stdout, err = run_cli("export", runs["dcgan"], "--format", "torchscript", "--part", "generator", "--out", out)
    assert code == 0, err
    assert out.exists() and "wrote" in stdout
    images = torch.jit.load(str(out))(torch.randn(3, 8))
    assert images.shape == (3, 1, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    code, _, err = run_cli("export", runs["dcgan"], "--format", "onnx", "--part", "encoder", "--out", tmp_path / "e.onnx")
    assert code == 2 and "has no encoder" in err and len(err.strip().splitlines()) == 1
