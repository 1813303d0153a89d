"""The GPU path, as far as it runs on a CPU: --precision, --device, compile=true, loss scaling."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from latentforge.engine.precision import autocast, check_precision, grad_scaler
from latentforge.errors import ConfigError
from latentforge.models import build_model
from latentforge.train import Trainer, train
from latentforge.train.state import restore_scale_state

QUIET = dict(progress=False, device="cpu", log=lambda m: None)


def test_bf16_on_cpu_trains_close_to_fp32(tmp_path):
    runs = {p: train("stacked-ae", "digits", out=tmp_path / p, overrides={"epochs": 3, "precision": p}, **QUIET)
            for p in ("32", "bf16")}
    l32, l16 = runs["32"].history[-1]["valid_loss"], runs["bf16"].history[-1]["valid_loss"]
    assert l16 == pytest.approx(l32, rel=0.03)
    assert runs["bf16"].history[-1]["train_loss"] < runs["bf16"].history[0]["train_loss"]
    # the weights stay float32 (autocast computes in bfloat16) and differ from the fp32 run's
    a, b = (load_file(tmp_path / p / "checkpoint.safetensors") for p in ("32", "bf16"))
    assert all(v.dtype == torch.float32 for k, v in b.items() if k.startswith("model."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("model.") and a[k].is_floating_point())


def test_bf16_gan_on_cpu(tmp_path, tiny_images):
    run = train("gan", tiny_images, out=tmp_path / "g", **QUIET,
                overrides={"epochs": 1, "batch_size": 16, "precision": "bf16", "g_hidden_sizes": [16],
                           "d_hidden_sizes": [16], "coding_size": 4, "sample_every": 0})
    assert torch.isfinite(torch.tensor(run.history[-1]["train_d_loss"]))


def test_autocast_context():
    with autocast("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("32", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert grad_scaler("bf16", torch.device("cpu")) is None and grad_scaler("16-mixed", torch.device("cpu")) is None


def test_16_mixed_is_cuda_only_and_not_for_gans(tmp_path, run_cli):
    code, _, err = run_cli("train", "stacked-ae", "--data", "digits", "--precision", "16-mixed", "--device", "cpu",
                           "--out", tmp_path / "r")
    assert code == 2 and "16-mixed needs a CUDA device" in err and "bf16" in err
    assert not (tmp_path / "r").exists()                      # refused before anything is written
    with pytest.raises(ConfigError, match="GAN"):
        check_precision("16-mixed", torch.device("cuda"), adversarial=True)
    check_precision("16-mixed", torch.device("cuda"))         # the device is what decides, not this machine


def test_device_flag(tmp_path, run_cli):
    if not torch.cuda.is_available():
        code, _, err = run_cli("train", "stacked-ae", "--data", "digits", "--device", "cuda", "--out", tmp_path / "c")
        assert code == 2 and "no CUDA device" in err and not (tmp_path / "c").exists()
    code, _, err = run_cli("train", "stacked-ae", "--data", "digits", "--device", "tpu9", "--out", tmp_path / "t")
    assert code == 2 and "--device" in err


def test_compile_is_cuda_only(tmp_path):
    notes: list[str] = []
    over = {"epochs": 1, "hidden_sizes": [16], "coding_size": 4}
    plain = train("stacked-ae", "digits", out=tmp_path / "p", overrides=over, **QUIET)
    comp = train("stacked-ae", "digits", out=tmp_path / "c", overrides={**over, "compile": True},
                 progress=False, device="cpu", log=notes.append)
    assert any("only used on CUDA" in n for n in notes)
    assert not getattr(comp.model, "_latentforge_compiled", False)
    assert comp.history[-1]["train_loss"] == plain.history[-1]["train_loss"]


def test_loss_scaling_step_on_cpu(tiny_images):
    """The 16-mixed step (GradScaler: scaled backward, unscaled step) gives the plain step's
    weights: powers of two scale exactly. On CUDA it runs under float16 autocast."""
    x = torch.from_numpy(tiny_images.x)

    def fit(scaler):
        torch.manual_seed(0)
        net = build_model("stacked-ae", input_shape=[1, 8, 8], hidden_sizes=[8], coding_size=4, epochs=2,
                          batch_size=16, fused_step=False)
        tr = Trainer(net, net.config, progress=False, log=lambda m: None)
        tr._scaler = scaler
        tr.fit(x)
        return net, tr

    ref, _ = fit(None)
    scaled, tr = fit(torch.amp.GradScaler("cpu", init_scale=2.0**10))
    for (k, a), b in zip(ref.state_dict().items(), scaled.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    t = tr.checkpoint_tensors()
    assert float(t["amp.scale"]) == 2.0**10
    tr2 = Trainer(scaled, scaled.config, progress=False, log=lambda m: None)
    tr2._scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    restore_scale_state(tr2, t)
    assert tr2._scaler.get_scale() == 2.0**10
