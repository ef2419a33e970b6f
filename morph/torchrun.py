"""What torchrun (or accelerate launch) tells each process it starts, through the environment it sets: read in
one place, for the GPU a rank renders on (models.pipeline) and its share of the frames (render.shard). No torch."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    world: int = 1  # processes in the whole job (WORLD_SIZE)
    local_rank: int = 0  # this process's rank on its machine (LOCAL_RANK)
    local_world: int = 1  # processes on its machine (LOCAL_WORLD_SIZE)


def launch() -> Launch:
    """This process's place in a torchrun job; the defaults when it runs alone. A launcher that sets no
    LOCAL_WORLD_SIZE is taken to run every process on one machine."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Launch()
    return Launch(world, int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
