"""Models from outside the package: ``latentforge.register_model``, the ``latentforge.models``
entry-point group of installed plugins, and autoencoders / VAEs around the user's own networks.

The plugin is ``tests/plugins/lf_tiny_plugin.py`` (a file outside the package); the tests write
the dist-info an installer would (``entry_points.txt``) into a temporary folder on the path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import latentforge as lf
from latentforge import models as registry
from latentforge.errors import ConfigError
from latentforge.models import Capability, LatentModel, ModelOutput
from latentforge.models.custom import ModuleAE, ModuleAEConfig, ModuleVAE
from latentforge.models.vae import VAEConfig

PLUGINS = Path(__file__).resolve().parent / "plugins"
REPO = Path(__file__).resolve().parents[1]


def _write_dist_info(site: Path) -> None:
    """What ``pip install`` of a plugin distribution leaves in site-packages (the metadata part)."""
    info = site / "lf_tiny_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lf-tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[latentforge.models]\ntiny-vae = lf_tiny_plugin:TinyVAE\n")


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """The plugin installed on sys.path of this process; the registry forgets it afterwards."""
    site = tmp_path / "site"
    _write_dist_info(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield site
    registry.unregister_model("tiny-vae")
    registry._plugin_errors.pop("tiny-vae", None)


@pytest.fixture
def digits_small(tmp_path):
    x = lf.load_data("digits").x[:300]
    path = tmp_path / "digits.npy"
    np.save(path, x)
    return path


def test_plugin_trains_saves_loads_reports_and_exports_through_the_cli(plugin_site, digits_small, tmp_path,
                                                                       run_cli):
    code, out, err = run_cli("models")
    assert code == 0 and "tiny-vae" in out, err
    run_dir = tmp_path / "run"
    code, out, err = run_cli("train", "tiny-vae", "--data", digits_small, "--out", run_dir, "--seed", "1")
    assert code == 0, err
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["model"] == "tiny-vae"
    code, out, err = run_cli("info", run_dir, "--json")
    assert code == 0 and json.loads(out)["model"] == "tiny-vae", err
    # served through its declared capabilities: codes, samples, the report, export
    code, _, err = run_cli("encode", run_dir, "--data", digits_small, "--out", tmp_path / "codes.npy")
    assert code == 0 and np.load(tmp_path / "codes.npy").shape == (300, 2), err
    code, _, err = run_cli("generate", run_dir, "-n", "5", "--out", tmp_path / "gen.npy")
    assert code == 0 and np.load(tmp_path / "gen.npy").shape == (5, *np.load(digits_small).shape[1:]), err
    code, out, err = run_cli("report", run_dir, "--out", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert code == 0 and "tiny-vae" in page and "Samples" in page and "nterpolation" in page, err
    code, _, err = run_cli("export", run_dir, "--format", "torchscript", "--part", "decoder",
                           "--out", tmp_path / "dec.pt")
    assert code == 0, err
    dec = torch.jit.load(str(tmp_path / "dec.pt"))
    run = lf.load_run(run_dir)
    z = torch.zeros(3, 2)
    torch.testing.assert_close(dec(z), run.model.decode(z))


def test_a_run_of_an_unregistered_model_says_to_register_it(plugin_site, digits_small, tmp_path, run_cli,
                                                            monkeypatch):
    run_dir = tmp_path / "run"
    assert run_cli("train", "tiny-vae", "--data", digits_small, "--out", run_dir, "--epochs", "1")[0] == 0
    registry.unregister_model("tiny-vae")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(plugin_site), str(PLUGINS))])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    code, out, err = run_cli("info", run_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "tiny-vae" in err and "lf_tiny_plugin:TinyVAE" in err and "register_model" in err


def test_the_plugin_is_found_by_a_fresh_latentforge_process(tmp_path):
    _write_dist_info(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path / "site"), str(PLUGINS)])}
    res = subprocess.run([sys.executable, "-m", "latentforge", "models", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["tiny-vae"]["defaults"]["width"] == 16


def test_a_broken_plugin_is_named_when_asked_for_and_spares_the_others(tmp_path, monkeypatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[latentforge.models]\nbroken-ae = no_such_module_xyz:Model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_plugin_errors", {})
    assert "stacked-ae" in lf.model_names() and "broken-ae" not in lf.model_names()
    with pytest.raises(ConfigError, match="broken-ae.*no_such_module_xyz:Model.*failed to load"):
        lf.get_model_class("broken-ae")


# ------------------------------------------------------------------------------------ register_model
class TinyAE(ModuleAE):
    """A user autoencoder: its networks built from the config, so that a saved run loads again."""

    def build_encoder(self, config):
        return nn.Sequential(nn.Flatten(), nn.Linear(self.input_dim, config.coding_size))

    def build_decoder(self, config):
        return nn.Linear(config.coding_size, self.input_dim)


def test_register_model_from_python_trains_loads_and_serves_sklearn(tmp_path, tiny_images):
    lf.register_model("test-tiny-ae", TinyAE)
    try:
        assert lf.register_model("test-tiny-ae", TinyAE) is TinyAE          # the same class again: fine
        run = lf.train("test-tiny-ae", tiny_images, out=tmp_path / "r", overrides={"epochs": 2, "coding_size": 3})
        again = lf.load_run(tmp_path / "r")
        x = tiny_images.x[:7]
        np.testing.assert_array_equal(run.encode(x), again.encode(x))
        assert again.encode(x).shape == (7, 3)
        from latentforge.sklearn import AutoencoderTransformer
        est = AutoencoderTransformer("test-tiny-ae", coding_size=2, epochs=1, random_state=0)
        assert est.fit_transform(tiny_images.x.reshape(64, -1)).shape == (64, 2)
    finally:
        registry.unregister_model("test-tiny-ae")
    with pytest.raises(ConfigError, match="unknown model 'test-tiny-ae'.*register_model"):
        lf.get_model_class("test-tiny-ae")


def test_register_model_refuses_what_would_not_work():
    class Other(TinyAE):
        pass

    with pytest.raises(ConfigError, match="built-in"):
        lf.register_model("vae", TinyAE)
    with pytest.raises(ConfigError, match="not a latentforge.models.LatentModel"):
        lf.register_model("x-model", nn.Linear)
    with pytest.raises(ConfigError, match="lower-case"):
        lf.register_model("Bad Name", TinyAE)

    @dataclass
    class Cfg(ModuleAEConfig):
        pass

    class Liar(LatentModel):              # declares sampling but has no sample()
        config_class = Cfg
        capabilities = Capability.SAMPLES

        def forward(self, x, y=None):
            return ModelOutput(loss=x.sum())

    with pytest.raises(ConfigError, match="declares SAMPLES but has no sample"):
        lf.register_model("liar", Liar)
    lf.register_model("test-other", TinyAE)
    try:
        with pytest.raises(ConfigError, match="already registered"):
            lf.register_model("test-other", Other)
        lf.register_model("test-other", Other, replace=True)
        assert lf.get_model_class("test-other") is Other
    finally:
        registry.unregister_model("test-other")


def test_user_encoder_and_decoder_modules_in_the_ae_and_vae():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    ae = ModuleAE(ModuleAEConfig(input_shape=[1, 8, 8], coding_size=4), encoder=enc, decoder=nn.Linear(4, 64))
    x = torch.rand(5, 1, 8, 8)
    assert ae.encoder is enc and ae.encode(x).shape == (5, 4) and ae.reconstruct(x).shape == x.shape
    ae(x).loss.backward()
    assert enc[1].weight.grad is not None

    class TwoHeads(nn.Module):                 # the encoder may return (mean, log_var)
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
            self.mean, self.log_var = nn.Linear(8, 3), nn.Linear(8, 3)

        def forward(self, x):
            h = self.body(x)
            return self.mean(h), self.log_var(h)

    vae = ModuleVAE(VAEConfig(input_shape=[1, 8, 8], coding_size=3), encoder=TwoHeads(), decoder=nn.Linear(3, 64))
    assert vae.encode(x).shape == (5, 3) and vae.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)
    assert torch.isfinite(vae.log_likelihood(x, k=4)).all() and torch.isfinite(vae(x).loss)
    with pytest.raises(ConfigError, match="give encoder"):
        ModuleAE(ModuleAEConfig(input_shape=[1, 8, 8]))
    bad = ModuleVAE(VAEConfig(input_shape=[1, 8, 8], coding_size=3), encoder=nn.Sequential(nn.Flatten(), nn.Linear(64, 5)),
                    decoder=nn.Linear(3, 64))
    with pytest.raises(ConfigError, match=r"\(mean, log_var\) or one \(N, 6\) tensor"):
        bad.encode(x)
