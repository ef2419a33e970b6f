"""Sharding across processes that torchrun (or accelerate launch) started: each rank renders its share.

The ranks come from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK: morph.torchrun); they agree
through torch.distributed (gloo: small messages, on any device), never by polling files. Batch
b belongs to rank b mod WORLD_SIZE; rank 0 takes the output folder's lock, waits for every rank at
the end, and writes the video and the manifest. Which GPU a rank renders on is the config's
device, read by pipeline.resolve_device: joining the group touches no GPU (a CPU job starts no CUDA).
"""

from dataclasses import dataclass
from datetime import timedelta

import torch

from ..torchrun import launch

# how long a rank waits for the others (in a gather, while the slowest renders its last batches) or for the leader
# to finish the outputs; gloo's default of 30 minutes aborts long renders
SETTLE_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def owns(self, batch_number: int) -> bool:
        return batch_number % self.world == self.rank

    def settle(self) -> None:
        """Wait until every rank is here, however long the leader's video, platform files and analyses take."""
        if self.world > 1:
            torch.distributed.monitored_barrier(timeout=SETTLE_TIMEOUT)  # gloo's, which takes its own timeout

    def close(self) -> None:
        """Leave the process group (a rank that exits while still in it can abort)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def gathered(self, value) -> list:
        """Every rank's `value` (any picklable object), in rank order, on every rank; a barrier too."""
        if self.world == 1:
            return [value]
        values = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

    def from_leader(self, value):
        """The leader's `value`, on every rank."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def this_process() -> Shard:
    """This process's shard: the whole job, or its rank's share under torchrun (joining the process group)."""
    if launch().world == 1:
        return Shard()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo", timeout=SETTLE_TIMEOUT)
    return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())
