"""The chunked training path (``engine/chunks.py``): what the CUDA graphs replay, checked on the CPU.

On a CPU the chunks run eagerly; on CUDA each chunk is captured once and replayed. Both run the
same chunk function, so these tests pin down what a replay computes: the epoch's batches in the
seeded order, the hand-fused step, the loss table, chunk boundaries and the learning rate."""
from __future__ import annotations

import pytest
import torch

from latentforge.engine.chunks import ChunkedSteps, graph_safe_params
from latentforge.engine.dense_sgd import DenseSGDStep
from latentforge.models import build_model
from latentforge.train import Trainer

SMALL = dict(input_shape=[20], hidden_sizes=[12], coding_size=3, lr=0.5)


def _model(**kw):
    torch.manual_seed(0)
    return build_model("stacked-ae", **{**SMALL, **kw})


def test_plan_covers_the_epoch_in_chunks():
    c = ChunkedSteps(lambda xb: None, torch.zeros(1, 20), [], chunk=4)
    plan = c.plan(10 * 8 + 3, 8)                       # 10 full batches and a last one of 3
    assert plan == [(8,) * 4, (8,) * 4, (8, 8, 3)]
    assert sum(map(sum, plan)) == 83
    assert c.plan(16, 8) == [(8, 8)]
    assert not c.use_graphs                            # CPU data: the chunks run eagerly


@pytest.mark.parametrize("gather_chunks", [False, True, "capped"],
                         ids=["gather-per-step", "gather-per-chunk", "gather-per-chunk-over-the-cap"])
@pytest.mark.parametrize("n", [96, 101])
def test_chunks_compute_the_per_step_loop_exactly(n, gather_chunks, monkeypatch):
    """An epoch in chunks (the last one short, with a short last batch) gives bit for bit the
    weights and losses of calling the fused step batch by batch in the same order, whether each
    batch is gathered on its own (CPU) or sliced from one gather per chunk (CUDA's default, up
    to CHUNK_GATHER_BYTES: a larger chunk gathers per step)."""
    from latentforge.engine import chunks as graphs
    if gather_chunks == "capped":
        monkeypatch.setattr(graphs, "CHUNK_GATHER_BYTES", 20 * 4 * 23)    # 23 rows of 20 floats
    x = torch.rand(n, 20)
    a, b = _model(), _model()
    a.prepare(x), b.prepare(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    chunks = ChunkedSteps(lambda xb: DenseSGDStep(a)(xb, 0.5), x, graph_safe_params(a), chunk=3,
                          gather_chunks=bool(gather_chunks))
    assert chunks.gathers_whole(5) is bool(gather_chunks)             # the short last chunk: always
    assert chunks.gathers_whole(24) is (gather_chunks is True)         # a full chunk: not over the cap
    done = list(chunks.epoch(order, 8))
    table = torch.cat([t for _, t in done])
    ref = []
    for i in range(0, n, 8):
        out = DenseSGDStep(b)(x[order[i:i + 8]], 0.5)
        ref.append([out.loss, out.parts["bce"]])
    assert [last for last, _ in done] == [2, 5, 8, 11, 12][:len(done)]
    assert chunks.names == ["bce"] and table.shape == (len(ref), 2)
    assert torch.equal(table, torch.tensor(ref))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_trainer_takes_the_chunked_path_and_follows_the_lr_schedule():
    """Trainer.fit on the chunked path equals a hand loop over the same seeded order with each
    epoch's learning rate (the chunks are rebuilt when the lr changes; on CUDA that recaptures)."""
    x = torch.rand(150, 20)
    m = _model(epochs=3, batch_size=16, lr_schedule="cosine")
    m.prepare(x)
    ref = _model(epochs=3, batch_size=16, lr_schedule="cosine")
    ref.load_state_dict(m.state_dict())
    tr = Trainer(m, m.config, progress=False, log=lambda s: None)
    hist = tr.fit(x)
    assert tr.fast_step is not None                      # the chunked path was taken
    gen = torch.Generator().manual_seed(m.config.seed)
    lrs = []
    for epoch in range(3):
        tr2 = Trainer(ref, ref.config, progress=False)
        tr2._set_lr(epoch)
        lr = tr2.optimizer.param_groups[0]["lr"]
        lrs.append(lr)
        order = torch.randperm(150, generator=gen)
        losses = []
        for i in range(0, 150, 16):
            losses.append(float(DenseSGDStep(ref)(x[order[i:i + 16]], lr).loss) * len(order[i:i + 16]))
        assert hist[epoch]["train_loss"] == pytest.approx(sum(losses) / 150, rel=1e-6)
        assert hist[epoch]["lr"] == pytest.approx(lr)
    assert lrs[0] > lrs[1] > lrs[2]
    for (k, va), vb in zip(m.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(va, vb), k


def test_chunked_path_only_where_the_fused_step_applies():
    x = torch.rand(64, 20)
    for kw, chunked in (({}, True), ({"fused_step": False}, False), ({"momentum": 0.9}, False),
                        ({"nan_policy": "skip"}, False), ({"precision": "bf16"}, False)):
        m = _model(epochs=1, batch_size=16, **kw)
        m.prepare(x)
        tr = Trainer(m, m.config, progress=False, log=lambda s: None)
        tr.fit(x)
        assert (tr.fast_step is not None) == chunked, kw


class _FakeGraph:
    """Stands in for a captured CUDA graph on the CPU: ``replay`` runs the chunk on the static
    index buffer and writes the static loss table, as a faithful graph does; ``wrong`` adds a
    corrupted update (what a bad capture could do)."""

    def __init__(self, chunks, sizes, idx, table, wrong):
        self.chunks, self.sizes, self.idx, self.table, self.wrong = chunks, sizes, idx, table, wrong

    def replay(self):
        t = self.chunks._run(self.sizes, self.idx)
        if self.wrong:
            with torch.no_grad():
                self.chunks.params[0].add_(1e-2)
        self.table.copy_(t)


class _Faked(ChunkedSteps):
    mode = "faithful"

    def _capture(self, sizes):
        if self.mode == "raise":
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        idx, table = torch.zeros(sum(sizes), dtype=torch.long), torch.zeros(len(sizes), 2)
        return _FakeGraph(self, sizes, idx, table, self.mode == "wrong"), idx, table


@pytest.mark.parametrize("mode", ["faithful", "wrong", "raise"])
def test_graph_replays_are_checked_against_eager_steps(mode):
    """The first replay of every captured chunk is checked against the eager chunk; a graph that
    differs or a capture that fails is reported once and training goes on eagerly, with the same
    result as without graphs."""
    x = torch.rand(101, 20)
    a, b = _model(), _model()
    a.prepare(x), b.prepare(x)
    order = torch.randperm(101, generator=torch.Generator().manual_seed(1))
    logs = []
    faked = _Faked(lambda xb: DenseSGDStep(a)(xb, 0.5), x, graph_safe_params(a), chunk=3, log=logs.append)
    faked.mode, faked.use_graphs = mode, True
    ref = ChunkedSteps(lambda xb: DenseSGDStep(b)(xb, 0.5), x, graph_safe_params(b), chunk=3)
    for _epoch in range(2):
        got = torch.cat([t for _, t in faked.epoch(order, 8)])
        want = torch.cat([t for _, t in ref.epoch(order, 8)])
        assert torch.equal(got, want)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    if mode == "faithful":
        assert faked.use_graphs and len(faked._graphs) == 2 and not logs   # full chunks and the last one
    else:
        assert not faked.use_graphs and len(logs) == 1
        assert ("differs" if mode == "wrong" else "capture failed (operation not permitted") in logs[0]
