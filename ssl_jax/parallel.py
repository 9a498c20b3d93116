"""Device mesh, shardings of the train state, and host-local -> global arrays.

One `jax.sharding.Mesh` over every device of every process, with up to two axes named in the
config (`config.mesh`, e.g. "data:-1", the default, or "data:2,fsdp:4"). The batch is split
over all of them. Every leaf of the train state is placed by `config.sharding_rules`, a list
of (regex over the leaf's path, rule): `replicate`, or `fsdp`, which splits the leaf's largest
dimension divisible by the `fsdp` axis over it (fully sharded data parallelism, Xu et al. 2020
/ ZeRO-3, Rajbhandari et al. 2020; big_vision's `fsdp` rule). With no `fsdp` axis every leaf
is replicated: plain data parallelism.

A jitted step over such arrays is the modern form of a pmapped step: XLA runs the same program
on each device and inserts the collectives (the gradient all-reduce or, under FSDP, the
parameter all-gathers and gradient reduce-scatters, global BatchNorm statistics, the
all-gather behind a contrastive loss's negatives), and it spans hosts once
`jax.distributed.initialize()` has run.
"""
from collections.abc import Sequence
import math
import re
from typing import Any

import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
AXES = (DATA_AXIS, FSDP_AXIS)
RULES = ("replicate", "fsdp")


def parse_mesh(text: str) -> tuple[tuple[str, int], ...]:
  """"data:2,fsdp:4" -> (("data", 2), ("fsdp", 4)); a one-line UserError for anything else."""
  axes = []
  for part in str(text).split(","):
    name, _, size = part.strip().partition(":")
    try:
      size = int(size)
    except ValueError:
      size = 0
    if name not in AXES or not (size >= 1 or size == -1) or name in dict(axes):
      raise UserError(f"config.mesh must be axes {' and '.join(AXES)} as 'name:size,...' with "
                      f"sizes >= 1 or one -1 (the remaining devices), e.g. 'data:2,fsdp:4'; "
                      f"got {text!r}")
    axes.append((name, size))
  if sum(size == -1 for _, size in axes) > 1:
    raise UserError(f"config.mesh may size one axis -1, got {text!r}")
  return tuple(axes)


def make_mesh(axes: str | int = -1) -> Mesh:
  """The mesh of `config.mesh` ("data:2,fsdp:4"), or an int n for a `data` axis over the first
  n devices (-1: all, across all processes). Fewer devices than there are use the first ones."""
  named = ((DATA_AXIS, axes),) if isinstance(axes, int) else parse_mesh(axes)
  devices = jax.devices()
  known = math.prod(size for _, size in named if size != -1)
  if any(size == -1 for _, size in named):
    if len(devices) % known:
      raise UserError(f"config.mesh {axes!r}: {len(devices)} devices do not split into axes of "
                      f"{known}")
    named = tuple((name, len(devices) // known if size == -1 else size) for name, size in named)
  shape = tuple(size for _, size in named)
  if math.prod(shape) > len(devices):
    raise UserError(f"config.mesh {axes!r} needs {math.prod(shape)} devices; there are "
                    f"{len(devices)}")
  grid = mesh_utils.create_device_mesh(shape, devices[:math.prod(shape)])
  return Mesh(grid, tuple(name for name, _ in named))


def check_rules(rules: Sequence[Any], min_size: Any) -> None:
  """`config.sharding_rules`: (regex, rule) pairs with a rule in RULES; `config.fsdp_min_size`:
  an integer >= 0."""
  check_number("config.fsdp_min_size", min_size, minimum=0, integer=True)
  for entry in rules:
    ok = isinstance(entry, (tuple, list)) and len(entry) == 2 and entry[1] in RULES
    if ok:
      try:
        re.compile(entry[0])
      except (re.error, TypeError):
        ok = False
    if not ok:
      raise UserError(f"config.sharding_rules must be (regex over the state path, rule) pairs "
                      f"with rule in {', '.join(RULES)}; got {entry!r}")


def leaf_path(path: tuple) -> str:
  """A state leaf's path as "params/model/encoder/Conv_0/kernel" (optimizer states add their
  own names: "opt_state/model/0/mu/encoder/Conv_0/kernel")."""
  parts = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> PartitionSpec:
  """The largest dimension divisible by `fsdp_size` split over `fsdp` (the first such if
  several tie); replicated when none is, or when the leaf has fewer than `min_size` elements."""
  if fsdp_size <= 1 or math.prod(shape) < min_size:
    return PartitionSpec()
  candidates = [d for d in range(len(shape)) if shape[d] % fsdp_size == 0]
  if not candidates:
    return PartitionSpec()
  split = max(candidates, key=lambda d: (shape[d], -d))
  return PartitionSpec(*[FSDP_AXIS if d == split else None for d in range(len(shape))])


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Sequence[Any],
                    min_size: int) -> Any:
  """A NamedSharding for every leaf of `abstract_state`, by the first rule whose regex is found
  in the leaf's path (`leaf_path`); leaves no rule matches are replicated."""
  fsdp_size = dict(zip(mesh.axis_names, mesh.devices.shape)).get(FSDP_AXIS, 1)
  compiled = [(re.compile(pattern), rule) for pattern, rule in rules]

  def place(path, leaf):
    name = leaf_path(path)
    rule = next((rule for pattern, rule in compiled if pattern.search(name)), "replicate")
    spec = fsdp_spec(leaf.shape, fsdp_size, min_size) if rule == "fsdp" else PartitionSpec()
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(place, abstract_state)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every mesh axis; the other axes whole."""
  return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays sharded on `data`."""
  sharding = batch_sharded(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in local_batch.items()}

