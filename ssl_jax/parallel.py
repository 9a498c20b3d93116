"""Device mesh, shardings, and host-local -> global arrays.

One `jax.sharding.Mesh` over every device of every process, axis `data`. The batch is sharded
on `data`; parameters and optimizer state are replicated. A jitted step over such arrays is
the modern form of a pmapped step: XLA runs the same program on each device and inserts the
collectives (gradient all-reduce, global BatchNorm statistics, the all-gather behind a
contrastive loss's negatives), and it spans hosts once `jax.distributed.initialize()` has run.
"""
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (-1: all, across all processes)."""
  devices = jax.devices()
  if num_devices != -1:
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`; the other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays sharded on `data`."""
  sharding = batch_sharded(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in local_batch.items()}


def tree_shardings(tree: Any, sharding: NamedSharding) -> Any:
  """The same sharding for every leaf of `tree` (works on abstract ShapeDtypeStruct trees)."""
  return jax.tree.map(lambda _: sharding, tree)
