"""Several processes (one per GPU, started by ``torchrun``) over disjoint shards of one dataset.

Rank 0 decides which shards are still to do (resuming a killed run works
the same with any number of processes) and broadcasts the list; rank ``r``
takes every ``world_size``-th pending shard from position ``r``, so the
ranks' shards are disjoint and cover the rest. Every rank writes its own
shards; after a barrier rank 0 merges them into the cache, and a last
barrier makes the cache visible to every rank before they return.

Without ``torch.distributed`` initialised (and no ``WORLD_SIZE > 1`` in
the environment) everything runs in the one process.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "assign_shards", "broadcast", "barrier", "gather", "teardown"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module initialised the process group, so it tears it down

    @property
    def active(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def setup(device=None):
    """Join the process group: the caller's, or one from torchrun's environment (``WORLD_SIZE`` > 1)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build.")
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def assign_shards(pending, rank, world_size):
    """The pending shards of one rank: disjoint across ranks, together all of them."""
    return list(pending)[rank::world_size]


def broadcast(obj, info):
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    _leave_together()
    return box[0]


def gather(obj, info):
    if not info.active:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    _leave_together()
    return out


def _leave_together():
    """A barrier after a collective that a rank may leave the extraction by (an error, a reused cache).

    A rank that finished a gloo collective first and then destroyed the process group and exited while its peer
    was still inside that collective made a process abort ("terminate called without an active exception"; 8 runs
    in 30 of the error test in tests/test_extraction_distributed.py, none with the barrier)."""
    dist.barrier()


def barrier(info):
    if info.active:
        dist.barrier()


def teardown(info):
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
