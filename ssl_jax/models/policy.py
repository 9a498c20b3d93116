"""The run-wide computation policy every network defaults to: its computation dtype
(`config.precision`) and whether it recomputes its blocks in the backward pass
(`config.remat`).

A network module's `dtype` and `remat` fields default to the policy in force when the module
is constructed (`dataclasses.field(default_factory=compute_dtype)`), and `methods.build`
constructs a method's networks inside `applied(config)`. So one trainer-level switch reaches
every encoder, head and decoder of every method without a method module reading it, while a
config section that names `dtype` or `remat` itself still wins for that network (a decoder
kept in float32, say). Modules built outside a policy (inference commands, tests) get
float32 without remat, as before.

Mixed precision here is the usual one (Micikevicius et al. 2018, "Mixed Precision Training";
big_vision's and MaxText's `dtype`): parameters, gradients and optimizer state stay float32
(Flax's `param_dtype`); layers compute in the policy's dtype; every network returns float32
features, so losses, their softmaxes, the online probe and the evaluation run in float32;
LayerNorm and BatchNorm reduce their statistics in float32 (Flax's
`force_float32_reductions`), and attention's softmax is computed in float32
(`force_fp32_for_softmax`). bfloat16 keeps float32's exponent range, so no loss scaling is
needed; float16 would need it and is not offered as a run-wide policy.
"""
import contextlib
import contextvars
from typing import Iterator, NamedTuple

from ssl_jax.config_lib import check_choice

# The values of config.precision and config.remat.
PRECISIONS = ("float32", "bfloat16")
REMAT = ("none", "blocks")


class Policy(NamedTuple):
  dtype: str = "float32"
  remat: bool = False


_POLICY = contextvars.ContextVar("ssl_jax_network_policy", default=Policy())


def check(config) -> None:
  """One-line UserErrors for `config.precision` and `config.remat`."""
  check_choice("config.precision", config.get("precision", "float32"), PRECISIONS)
  check_choice("config.remat", config.get("remat", "none"), REMAT)


@contextlib.contextmanager
def applied(config) -> Iterator[Policy]:
  """Networks constructed inside compute in `config.precision` and rematerialise their blocks
  when `config.remat == "blocks"` (unless their own section says otherwise)."""
  check(config)
  policy = Policy(config.get("precision", "float32"), config.get("remat", "none") == "blocks")
  token = _POLICY.set(policy)
  try:
    yield policy
  finally:
    _POLICY.reset(token)


def compute_dtype() -> str:
  """The computation dtype of networks constructed now (a module field's default)."""
  return _POLICY.get().dtype


def remat_blocks() -> bool:
  """Whether networks constructed now recompute their blocks (a module field's default)."""
  return _POLICY.get().remat
