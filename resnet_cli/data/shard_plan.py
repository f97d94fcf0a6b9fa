"""The plan of a training epoch over shards: which shards each rank's worker reads, in which order, and how many
batches each takes (data/shards.py reads them; the module docstring there tells the scheme)."""

from __future__ import annotations

import random

from ..errors import BadInput


def train_plan(shards: list[dict], seed: int, epoch: int, rank: int, world: int, workers: int,
               batch_size: int) -> tuple[list[list[int]], int]:
    """(each role's shard indices in reading order, batches per role) for this rank's training epoch."""
    if len(shards) < world:
        raise BadInput(f"{len(shards)} training shard(s) cannot be shared by {world} processes: convert with "
                       "smaller shards (--shard-images)")
    order = list(range(len(shards)))
    random.Random(f"shards {seed} {epoch}").shuffle(order)
    roles = max(1, min(workers, len(shards) // world))

    # Every role reads at least `least` shards whatever the permutation, so the k smallest shards bound what any
    # role holds: the same number of batches in every epoch, on every rank and role.
    least = len(shards) // (world * roles)
    per_role = sum(sorted(s["count"] for s in shards)[:least]) // batch_size
    if per_role == 0:
        raise BadInput(f"{len(shards)} training shard(s) of {min(s['count'] for s in shards)}+ images do not make a "
                       f"batch of {batch_size} for each of {world} process(es) x {roles} worker(s): lower the batch "
                       "size or the workers, or convert with more shards")
    return [order[rank::world][j::roles] for j in range(roles)], per_role


def sample_order(count: int, seed: int, epoch: int, shard: int) -> list[int]:
    order = list(range(count))
    random.Random(f"samples {seed} {epoch} {shard}").shuffle(order)
    return order


