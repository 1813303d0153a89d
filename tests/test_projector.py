"""TensorBoard's embedding projector: `encode --projector DIR` and `train --tensorboard` write codings,
labels and a sprite that TensorBoard's own config parser and PIL read back."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentforge.data import load_data
from latentforge.report.projector import write_projector
from latentforge.train import train


def _config(folder):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional dependency")
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2
    return text_format.Parse((folder / "projector_config.pbtxt").read_text(), projector_config_pb2.ProjectorConfig())


def _check(folder, codes, labels, side_img=(8, 8)):
    cfg = _config(folder)
    (emb,) = cfg.embeddings
    assert emb.tensor_path == "tensors.tsv" and emb.metadata_path == "metadata.tsv"
    back = np.loadtxt(folder / "tensors.tsv", delimiter="\t", ndmin=2)
    assert back.shape == codes.shape and np.allclose(back, codes, rtol=1e-5, atol=1e-6)
    meta = (folder / "metadata.tsv").read_text().splitlines()
    assert meta == [str(v) for v in labels]
    assert list(emb.sprite.single_image_dim) == [side_img[1], side_img[0]]
    sprite = np.asarray(Image.open(folder / emb.sprite.image_path))
    side = int(np.ceil(np.sqrt(len(codes))))
    assert sprite.shape[:2] == (side * side_img[0], side * side_img[1])
    return sprite


def test_encode_projector(run_cli, tmp_path):
    ds = load_data("digits").subset(slice(0, 200))
    np.save(tmp_path / "x.npy", ds.x)
    np.save(tmp_path / "y.npy", ds.y)
    run = train("stacked-ae", ds, out=tmp_path / "ae", overrides={"epochs": 1, "hidden_sizes": [16], "coding_size": 4},
                progress=False, device="cpu", log=lambda m: None)
    code, out, err = run_cli("encode", str(tmp_path / "ae"), "--data", str(tmp_path / "x.npy"), "--labels",
                             str(tmp_path / "y.npy"), "--projector", str(tmp_path / "proj"))
    assert code == 0, err
    assert "TensorBoard projector, 200 codings" in out
    codes = run.encode(ds.x)
    sprite = _check(tmp_path / "proj", codes, ds.y.tolist())
    first = np.round(np.clip(ds.x[0].reshape(8, 8), 0, 1) * 255)
    assert np.abs(sprite[:8, :8].astype(float) - first).max() <= 1          # image 0, top left
    code, out, err = run_cli("encode", str(tmp_path / "ae"), "--data", str(tmp_path / "x.npy"))
    assert code == 2 and "--projector" in err


def test_train_tensorboard_writes_projector(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional dependency")
    ds = load_data("digits").subset(slice(0, 300))
    run = train("stacked-ae", ds, out=tmp_path / "run", overrides={"epochs": 1, "hidden_sizes": [16], "coding_size": 4},
                progress=False, device="cpu", log=lambda m: None, tensorboard=True, valid_fraction=0.2)
    from latentforge.data import train_valid_split
    _, valid = train_valid_split(ds, 0.2, seed=run.config.seed)
    _check(tmp_path / "run" / "tensorboard", run.encode(valid.x), valid.y.tolist())


def test_write_projector_without_labels_or_sprite(tmp_path):
    codes = np.arange(12, dtype=np.float32).reshape(4, 3)
    done = write_projector(tmp_path / "p", codes)
    assert done["sprite"] is False and done["note"] is None
    assert (tmp_path / "p" / "metadata.tsv").read_text().splitlines() == ["0", "1", "2", "3"]
    assert not (tmp_path / "p" / "sprite.png").exists()
    (emb,) = _config(tmp_path / "p").embeddings
    assert not emb.HasField("sprite")
    big = write_projector(tmp_path / "q", np.zeros((5, 2)), images=np.broadcast_to(np.zeros((1, 3000, 3000), np.float32), (5, 3000, 3000)))
    assert big["sprite"] is False and "8192" in big["note"]
