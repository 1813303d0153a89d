"""Multi-process data-parallel training with ``torch.distributed`` (torchrun).

``torchrun --nproc_per_node N -m latentforge train ...`` starts N processes; ``latentforge train
... --nproc N`` starts torchrun for you (:func:`launch`, on 127.0.0.1 with a free port). Each
process joins the group (:func:`join`: gloo on CPU, nccl on GPU with one GPU per process),
builds the same model from the same seed (and takes rank 0's weights, as
``DistributedDataParallel`` does), and trains on its share of every global batch: ``batch_size``
is the global batch, split as evenly as possible over the processes, so a run with N processes
follows the same trajectory as one process with the same batch (up to float rounding).

Gradients are averaged the way ``DistributedDataParallel`` averages them: after every backward
pass, one bucketed all-reduce of every gradient computed in that pass (:class:`GradSync`),
weighted by each process's share of the batch so that a batch split unevenly still gives the
mean gradient. It is installed with gradient hooks instead of by wrapping the module, so the
same training step serves every model, the GAN loop with its two optimizers, its frozen
discriminator phase and its gradient penalties included (``DistributedDataParallel`` proper
cannot follow a module called several times per step or ``autograd.grad`` penalties).

Only rank 0 writes (checkpoints, ``run.json``, history, sample grids) and logs; every rank reads
the checkpoint to resume. Each rank draws its own noise (dropout, latents): its torch RNG is
seeded from (seed, rank), and every rank's RNG state is kept in the checkpoint.
"""
from __future__ import annotations

import atexit
import datetime
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import errors
from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True in a process started by torchrun with more than one process in the job."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def info() -> DistInfo:
    """This process's rank and the number of processes (0 and 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def device_for(dev: torch.device) -> torch.device:
    """The device of this process: under torchrun each process takes GPU ``LOCAL_RANK``."""
    if not launched():
        return dev
    if dev.type == "mps":
        raise ConfigError("multi-process training does not support --device mps (use cpu or cuda)")
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local >= count:
            raise ConfigError(f"process {local} on this machine has no GPU of its own ({count} GPU(s)); "
                              f"use at most {count} processes per machine with --device cuda")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    return dev


def join(dev: torch.device) -> DistInfo:
    """Under torchrun, join the process group (gloo on CPU, nccl on CUDA) once; it is left when
    the process exits. Outside torchrun, or when a group exists already, nothing happens."""
    if not launched() or dist.is_initialized():
        return info()
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_available() or not (dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()):
        raise ConfigError(f"this PyTorch build has no {backend} backend for multi-process training")
    kw: dict[str, Any] = {"timeout": datetime.timedelta(minutes=30)}
    if backend == "nccl":
        kw["device_id"] = dev
    dist.init_process_group(backend, **kw)
    atexit.register(_leave)
    return info()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and give every rank its result (or raise its latentforge
    error on every rank), e.g. to create the run folder once."""
    d = info()
    if d.world == 1:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if d.main:
        try:
            box[0] = ("ok", fn())
        except errors.LatentforgeError as e:
            error, box[0] = e, ("error", type(e).__name__, str(e))
        except BaseException as e:
            error, box[0] = e, ("error", "TrainingError", f"rank 0 failed: {e}")
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        if error is not None:
            raise error
        raise getattr(errors, box[0][1], errors.TrainingError)(box[0][2])
    return box[0][1]


def barrier() -> None:
    if info().world > 1:
        dist.barrier()


def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if info().world == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over ranks (a new tensor; ``t`` itself if there is one process)."""
    if info().world == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    d = info()
    if d.world == 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The torch seed of rank ``rank`` > 0 (rank 0 keeps the run's own RNG stream)."""
    return (int(seed) * 1_000_003 + rank * 7919 + epoch * 104_729) % (2**63 - 1)


class GradSync:
    """Average gradients over ranks after every backward pass, as ``DistributedDataParallel``.

    A hook on each parameter notes that its gradient is ready; the first one of a backward
    pass queues a callback at its end that all-reduces every ready gradient in one flat
    buffer. ``share`` is this rank's fraction of the global batch: the sum over ranks of
    ``share * grad`` is the gradient of the global batch's mean loss.
    """

    def __init__(self, params: Iterable[nn.Parameter]):
        self.params = list(dict.fromkeys(params))
        self.order = {id(p): i for i, p in enumerate(self.params)}
        self.share = 1.0 / max(1, info().world)
        self._ready: list[nn.Parameter] = []
        self._queued = False
        self.handles: dict[int, Any] = {}
        self.refresh()

    def refresh(self) -> None:
        """Hook the parameters that require gradients now (frozen ones cannot be hooked; call
        again after unfreezing some)."""
        for p in self.params:
            if p.requires_grad and id(p) not in self.handles:
                self.handles[id(p)] = p.register_post_accumulate_grad_hook(self._hook)

    def _hook(self, p: Tensor) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._reduce)
        self._ready.append(p)

    @torch.no_grad()
    def _reduce(self) -> None:
        ready = sorted({id(p): p for p in self._ready}.values(), key=lambda p: self.order[id(p)])
        self._ready, self._queued = [], False
        groups: dict[tuple, list[Tensor]] = {}
        for p in ready:
            if p.grad is not None:
                groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
        for grads in groups.values():
            flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.share)
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def remove(self) -> None:
        for h in self.handles.values():
            h.remove()
        self.handles = {}


def report_once(report: Callable[[], None]) -> None:
    """For an error every process raised at once: process 0 reports it, and the others wait until
    it has (they would otherwise exit first, and the launcher stop process 0 before it speaks)."""
    if not (dist.is_available() and dist.is_initialized()):
        report()
        return
    if dist.get_rank() == 0:
        report()
    try:
        dist.barrier()
    except Exception:                   # noqa: BLE001 (a process already gone: nothing to wait for)
        pass


# ------------------------------------------------------------------------------ the launcher
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(argv: list[str], nproc: int) -> int:
    """Run ``latentforge ARGV`` in ``nproc`` processes on this machine with torchrun's launcher
    (``torch.distributed.run``, in this process) and return the processes' exit status: 0, the
    status of a failed process (2 for an error it has reported, 130 for Ctrl-C), or 1.

    torchrun's own failure report (a traceback of its launcher) is left out: each process prints
    its error as one line, and the NaN guard's errors, raised by all processes at once, once."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--nnodes=1", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
                       f"--master_port={free_port()}", "-m", "latentforge", *argv])
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}           # no oversubscription
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"                                             # single machine: loopback
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if saved[k] is None})           # the user's settings win
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)       # its notes on stopping processes repeat what they said
    try:
        run(args)
        return 0
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in (2, 130) if c in codes), 1)
    except (SignalException, KeyboardInterrupt):   # Ctrl-C: the processes got it too, and saved
        return 130
    finally:
        elastic.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


# ------------------------------------------------------------------ the trainer's side of several processes
def start_fit(tr: Any) -> None:
    """At the start of a fit with several processes: rank 0's weights everywhere, the gradient
    averaging hooks, and a torch RNG of each rank's own (unless restored from the checkpoint)."""
    d = tr.dist
    if d.world == 1:
        return
    broadcast_module(tr.model)
    tr._sync = GradSync(tr.params)
    if d.rank > 0 and not tr._rank_rng_restored:
        torch.manual_seed(rank_seed(tr.cfg.seed, d.rank, tr.state.epoch))


def sync_ranks(tr: Any) -> None:
    """End of an epoch with several processes: rank 0's buffers (e.g. batch-norm statistics)
    everywhere, as DistributedDataParallel does, and every rank's RNG state for the checkpoint."""
    if tr.dist.world == 1:
        return
    with torch.no_grad():
        for buf in tr.model.buffers():
            dist.broadcast(buf, src=0)
    if tr.run_dir is not None:
        cuda = torch.cuda.get_rng_state(tr.device) if tr.device.type == "cuda" else None
        tr._rank_rng = all_gather_objects((torch.get_rng_state(), cuda))


def epoch_losses(tr: Any, losses: Any, n: int) -> dict[str, float]:
    """The epoch's mean losses (a :class:`~latentforge.train.losses.StepLosses` over ``n``
    samples) over all processes (one all-reduce)."""
    world, bs = tr.dist.world, tr.cfg.batch_size
    if world == 1 or not losses.rows:
        return losses.means(n, bs)
    return losses.means(n, bs, all_reduce_sum(losses.table().float()) / world)


def evaluate_shared(tr: Any, x: Any, y: Tensor | None) -> dict[str, float]:
    """``tr.evaluate`` under the run's precision; with several processes each evaluates its part
    of the held-out data and the means are combined."""
    from ..engine import autocast
    from .batches import share

    d, n = tr.dist, len(x)
    with autocast(tr.cfg.engine.precision, tr.device):
        if d.world == 1 or n < d.world:
            return tr.evaluate(x, y)
        lo, hi = (int(v) for v in share(n, d.rank, d.world))
        part = x[lo:hi] if isinstance(x, Tensor) else x.subset(slice(lo, hi))
        vals = tr.evaluate(part, y[lo:hi] if y is not None else None)
    sums = torch.tensor([v * (hi - lo) for v in vals.values()], dtype=torch.float64, device=tr.device)
    return dict(zip(vals, (all_reduce_sum(sums) / n).tolist()))
