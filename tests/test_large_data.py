"""Data larger than memory: memory-mapped .npy and shard folders, streamed in shuffled blocks."""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentforge.data import large, load_data, train_valid_split
from latentforge.data.large import BlockArray, StreamingDataset, sampled_fingerprint
from latentforge.errors import DataError
from latentforge.train import train

N = 600


@pytest.fixture
def stream_all(monkeypatch):
    """Stream every .npy / shard folder, in blocks of 50 rows."""
    monkeypatch.setenv("LATENTFORGE_STREAM_BYTES", "0")
    monkeypatch.setattr(large, "BLOCK_BYTES", 50 * 64 * 4)
    monkeypatch.setattr(large, "SAMPLE_BYTES", 160 * 64 * 4)    # normaliser / range samples: 160 rows


def _images(n=N, seed=0):
    """uint8 8x8 'images': 6 noisy prototypes."""
    rng = np.random.default_rng(seed)
    protos = rng.random((6, 8, 8))
    y = np.arange(n) % 6
    x = np.clip(protos[y] + 0.15 * rng.standard_normal((n, 8, 8)), 0, 1)
    return (x * 255).round().astype(np.uint8), y.astype(np.int64)


def _in_memory(x):
    ref = x.reshape(len(x), 1, 8, 8).astype(np.float32)
    ref /= np.float32(255.0)
    return ref


def _write_idx(path, arr):
    codes = {np.dtype(np.uint8): 0x08}
    head = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_memmapped_npy_reads_like_the_in_memory_loader(tmp_path, stream_all):
    x, _ = _images()
    np.save(tmp_path / "x.npy", x)
    ds = load_data(str(tmp_path / "x.npy"))
    assert isinstance(ds, StreamingDataset) and isinstance(ds.x, BlockArray)
    ref = _in_memory(x)
    assert ds.x.shape == ref.shape and ds.sample_shape == (8, 8) and ds.is_image
    assert np.array_equal(np.asarray(ds.x), ref)
    assert np.array_equal(ds.x[10:20], ref[10:20]) and np.array_equal(ds.x[[5, 3, 400]], ref[[5, 3, 400]])
    # the train/valid split gives views with the same rows as the in-memory split
    tr, va = train_valid_split(ds, 0.2, seed=3)
    mem_tr, mem_va = train_valid_split(load_data(str(tmp_path / "x.npy")).materialize(), 0.2, seed=3)
    assert isinstance(tr, StreamingDataset)
    assert np.array_equal(np.asarray(tr.x), mem_tr.x) and np.array_equal(np.asarray(va.x), mem_va.x)
    assert np.array_equal(tr.subset(slice(5, 50)).x[:], mem_tr.x[5:50])
    # range checks and the fingerprint come from a sample, equal to the in-memory array's
    assert 0.0 <= ds.x.min() <= ds.x.max() <= 1.0
    assert sampled_fingerprint(ds.x) == sampled_fingerprint(ref)
    # small data is still loaded into memory by default
    import os
    del os.environ["LATENTFORGE_STREAM_BYTES"]
    assert not isinstance(load_data(str(tmp_path / "x.npy")), StreamingDataset)


def test_shard_folders_npy_and_idx(tmp_path, stream_all):
    x, y = _images()
    npy = tmp_path / "npy"
    npy.mkdir()
    for i, (a, b) in enumerate([(0, 250), (250, 400), (400, N)]):
        np.save(npy / f"part-{i}.npy", x[a:b])
        np.save(npy / f"part-{i}.labels.npy", y[a:b])
    ds = load_data(str(npy))
    assert isinstance(ds, StreamingDataset) and len(ds.x.shards) == 3
    assert np.array_equal(np.asarray(ds.x), _in_memory(x)) and np.array_equal(ds.y, y)
    idx = tmp_path / "idx"
    idx.mkdir()
    for i, (a, b) in enumerate([(0, 300), (300, N)]):
        suffix = ".gz" if i else ""
        _write_idx(idx / f"train-{i:02d}-images-idx3-ubyte{suffix}", x[a:b])
        _write_idx(idx / f"train-{i:02d}-labels-idx1-ubyte{suffix}", y[a:b].astype(np.uint8))
    _write_idx(idx / "t10k-images-idx3-ubyte", x[:10])          # another split: not a shard
    ds = load_data(str(idx))
    assert isinstance(ds, StreamingDataset) and len(ds) == N
    assert np.array_equal(np.asarray(ds.x), _in_memory(x)) and np.array_equal(ds.y, y)
    # under the threshold a shard folder is concatenated in memory
    import os
    del os.environ["LATENTFORGE_STREAM_BYTES"]
    mem = load_data(str(npy))
    assert not isinstance(mem, StreamingDataset) and np.array_equal(mem.x, _in_memory(x))
    # shards that disagree are refused with one clear error
    os.environ["LATENTFORGE_STREAM_BYTES"] = "0"
    np.save(npy / "part-9.npy", np.zeros((5, 4, 4), np.uint8))
    np.save(npy / "part-9.labels.npy", np.zeros(5, np.int64))
    with pytest.raises(DataError, match="shape"):
        load_data(str(npy))


def test_block_order_is_a_pure_function_of_seed_and_epoch(tmp_path, stream_all):
    x, _ = _images()
    np.save(tmp_path / "x.npy", x)
    ds = load_data(str(tmp_path / "x.npy"))
    tr, _ = train_valid_split(ds, 0.1, seed=0)
    plan = tr.block_plan(seed=7, epoch=2)
    assert all(len(b) <= 50 for b in plan)
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(len(tr)))      # every sample once
    again = tr.block_plan(seed=7, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again))
    other = np.concatenate(tr.block_plan(seed=7, epoch=3))
    assert not np.array_equal(np.concatenate(plan), other)
    # each rank's batches are its contiguous part of every global batch
    whole = list(tr.epoch_batches(64, 7, 2, len(tr)))
    parts = [list(tr.epoch_batches(64, 7, 2, len(tr), rank=r, world=2)) for r in (0, 1)]
    assert len(whole) == len(parts[0]) == len(parts[1])
    for (xb, _, share), (x0, _, s0), (x1, _, s1) in zip(whole, *parts):
        assert share == 1.0 and abs(s0 + s1 - 1.0) < 1e-12
        assert torch.equal(torch.cat([x0, x1]), xb)


def test_streamed_training_matches_in_memory_and_never_reads_everything(tmp_path, stream_all, monkeypatch):
    x, _ = _images()
    np.save(tmp_path / "x.npy", x)
    reads: list[int] = []
    real_read = large.Shard.read

    def spy(self, rows, cache):
        out = real_read(self, rows, cache)
        reads.append(len(out))
        return out

    monkeypatch.setattr(large.Shard, "read", spy)
    cfg = {"epochs": 3, "batch_size": 32}
    streamed = train("stacked-ae", str(tmp_path / "x.npy"), out=tmp_path / "s", overrides=cfg, progress=False,
                     device="cpu", log=lambda m: None)
    assert streamed.data_info["streamed"] and streamed.data_info["fingerprint_kind"] == "sampled"
    # block by block (50 rows), the 60 held-out rows in one evaluation chunk: never the whole array
    assert max(reads) <= 60 and sum(reads) > 3 * N
    reads.clear()
    mem_ds = load_data(str(tmp_path / "x.npy")).materialize()
    memory = train("stacked-ae", mem_ds, out=tmp_path / "m", overrides=cfg, progress=False, device="cpu",
                   log=lambda m: None)
    s, m = streamed.history[-1], memory.history[-1]
    assert s["valid_loss"] == pytest.approx(m["valid_loss"], rel=0.03)     # same data, another order
    assert s["train_loss"] < streamed.history[0]["train_loss"]

    # resuming a streamed run is exact: the block order is a function of (seed, epoch)
    train("stacked-ae", str(tmp_path / "x.npy"), out=tmp_path / "r", overrides={**cfg, "epochs": 2},
          progress=False, device="cpu", log=lambda m: None)
    train("stacked-ae", str(tmp_path / "x.npy"), out=tmp_path / "r", overrides={"epochs": 3}, resume=True,
          progress=False, device="cpu", log=lambda m: None)
    a, b = load_file(tmp_path / "s" / "checkpoint.safetensors"), load_file(tmp_path / "r" / "checkpoint.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    # other data is refused on resume
    np.save(tmp_path / "x.npy", 255 - x)
    with pytest.raises(DataError, match="not the data"):
        train("stacked-ae", str(tmp_path / "x.npy"), out=tmp_path / "r", overrides={"epochs": 4}, resume=True,
              progress=False, device="cpu", log=lambda m: None)


def test_streamed_labels_steps_cap_and_cli(tmp_path, stream_all, run_cli):
    x, y = _images()
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        np.save(shards / f"s{i}.npy", x[i * 200:(i + 1) * 200])
        np.save(shards / f"s{i}.labels.npy", y[i * 200:(i + 1) * 200])
    code, out, err = run_cli("train", "conditional-vae", "--data", shards, "--epochs", "1", "--batch-size", "16",
                             "--set", "steps_per_epoch=5", "--set", "coding_size=2", "--set", "n_classes=6",
                             "--out", tmp_path / "run", "--device", "cpu")
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["data"]["streamed"] and info["metrics"]["samples_per_s"] > 0
    assert info["metrics"]["seconds"] > 0 and info["epochs_done"] == 1
    # --greedy needs the data in memory: refused before anything is written
    code, _, err = run_cli("train", "stacked-ae", "--data", shards, "--greedy", "--out", tmp_path / "g")
    assert code == 2 and "--greedy" in err and not (tmp_path / "g").exists()


def test_steps_per_epoch_caps_an_epoch(tiny_images):
    from latentforge.train import Trainer
    from latentforge.models import build_model
    torch.manual_seed(0)
    net = build_model("stacked-ae", input_shape=[1, 8, 8], hidden_sizes=[8], coding_size=4)
    net.config.steps_per_epoch = 3
    net.config.batch_size = 8
    calls = []
    tr = Trainer(net, net.config, epochs=1, progress=False, log=lambda m: None)
    real = tr.train_step
    tr.train_step = lambda xb, yb: calls.append(len(xb)) or real(xb, yb)
    tr.fit(torch.from_numpy(tiny_images.x))
    assert calls == [8, 8, 8] and tr.state.history[0]["samples_per_s"] > 0
