"""Data-parallel training with `torch.distributed`, launched by `torchrun`.

    torchrun --nproc-per-node 2 -m unlearn_cli train --dataset digits --out runs/ddp

Every rank builds the same seeded batch order, so each step's *global* batch is known to
all of them; rank r trains on its part of it (`torch.tensor_split`, rank 0 first), and
`DistributedDataParallel` averages the gradients. Each rank's loss is weighted by its share
of the global batch (times the world size), so the averaged gradient is that of the global
batch's mean loss: the same update a single process makes with the same batch, up to float
reduction order. Only rank 0 records (the update is identical on every rank, and rank 0
knows the whole global batch's ids) and writes the run directory; the other ranks never
touch it. A rank that dies makes the others' next all-reduce fail, so the job ends with an
error and the run stays `status: training` with only whole committed rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from unlearn_cli.cpu_layout import trains_channels_last
from unlearn_cli.errors import UnlearnError


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_part(self, ids: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (parts differ in size by at most one)."""
        return torch.tensor_split(ids, self.size)[self.rank]

    def loss_weight(self, local: float, total: float) -> float:
        """Scales a rank's mean loss so that DDP's gradient average is the global mean's."""
        return local * self.size / total


SINGLE = World(0, 1)


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: torch.device) -> World:
    """The process group from torchrun's environment (gloo on CPU, nccl on CUDA), or a
    single-process world when not launched by torchrun."""
    if not launched():
        return SINGLE
    import torch.distributed as dist

    if not dist.is_available():
        raise UnlearnError(
            "This torch build has no torch.distributed, so it cannot train with torchrun.",
            hint="install a torch build with distributed support, or train in one process",
        )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size())


def wrap(model: nn.Module, world: World, sample: torch.Tensor) -> nn.Module:
    """The model as DDP sees it (the same parameters), or the model itself alone. `sample`
    (one training input) decides the layout DDP's gradient buckets take, as the loop's."""
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if trains_channels_last(model, sample):  # DDP's buckets follow the loop's layout
        model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def finish(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            import gc

            # A rank that exits at once after training sometimes aborted (SIGABRT, 3 of 65
            # two-rank runs): gloo's runloop thread, still releasing its last work, needed
            # the GIL while the interpreter was finalizing. A collection here, while the
            # interpreter is whole, gives it that time (0 of 80 runs). A mitigation, not a
            # proof: the process group outlives destroy_process_group, for a reason not found.
            gc.collect()
            dist.destroy_process_group()


def relaunch(argv: tuple[str, ...], nproc: int, option: str = "--nproc-per-node") -> None:
    """Run this command line again under `torch.distributed.run` with `nproc` processes on
    this machine (rendezvous on 127.0.0.1, a free port), without `option`; wait for it."""
    import socket
    import subprocess
    import sys

    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            args.append(arg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "-m",
        "unlearn_cli",
        *args,
    ]
    code = subprocess.call(command)
    if code != 0:
        raise UnlearnError(
            f"Training with {nproc} processes failed (torchrun exited with {code}); the "
            "processes' errors are above.",
            hint="fix what they name; the run, if started, is left incomplete",
        )
