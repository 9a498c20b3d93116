r"""Times the exact neighbour search's matrix product in float32, bfloat16 and int8.

Label propagation at n = 20,000 is dominated by the exact k-NN search, an n x n x d product
(issue 4). This asks whether lower precision makes that product faster on this CPU (e.g.
through AMX bf16 / int8 units, which XLA may reach with flags such as
`XLA_FLAGS=--xla_cpu_use_onednn=true`). Prints one JSON row per precision:
{precision, n, dim, block_s (one [block, dim] x [dim, n] product), search_s (the whole n x n
product reduced to a row maximum, as the search's block maxima are), xla_flags}; times are
means of `--repeats` calls after one compiling call.

    python experiments/neighbour_search_precision.py --n 20000 --dim 128
    XLA_FLAGS=--xla_cpu_use_onednn=true python experiments/neighbour_search_precision.py
"""
import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp

flags.DEFINE_integer("n", 20_000, "Rows (queries and keys).")
flags.DEFINE_integer("dim", 128, "Feature dimension.")
flags.DEFINE_integer("block", 4096, "Query rows of the single-block product.")
flags.DEFINE_integer("repeats", 3, "Timed calls after the compiling one.")
FLAGS = flags.FLAGS

# (name, input dtype, accumulation dtype, input scale before rounding)
PRECISIONS = (("float32", jnp.float32, jnp.float32, 1.0),
              ("bfloat16_in_float32_acc", jnp.bfloat16, jnp.float32, 1.0),
              ("bfloat16", jnp.bfloat16, jnp.bfloat16, 1.0),
              ("int8_in_int32_acc", jnp.int8, jnp.int32, 20.0))


def _seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  started = time.perf_counter()
  for _ in range(FLAGS.repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - started) / FLAGS.repeats


def main(argv):
  del argv
  features = jax.random.normal(jax.random.PRNGKey(0), (FLAGS.n, FLAGS.dim))
  for name, dtype, accumulation, scale in PRECISIONS:
    keys = jnp.round(features * scale).astype(dtype) if dtype == jnp.int8 else \
        features.astype(dtype)
    product = lambda a, b, acc=accumulation: jnp.dot(a, b.T, preferred_element_type=acc)
    block = jax.jit(product)
    search = jax.jit(lambda a, b, product=product: jnp.max(product(a, b), axis=1))
    print(json.dumps({"precision": name, "n": FLAGS.n, "dim": FLAGS.dim,
                      "block_s": round(_seconds(block, keys[:FLAGS.block], keys), 4),
                      "search_s": round(_seconds(search, keys, keys), 4),
                      "xla_flags": os.environ.get("XLA_FLAGS", "")}), flush=True)


if __name__ == "__main__":
  app.run(main)
