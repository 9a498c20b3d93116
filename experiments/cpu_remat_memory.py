r"""Does XLA:CPU's memory analysis show what rematerialisation saves? (It does not.)

    python experiments/cpu_remat_memory.py [--size base --batch 16]

Compiles a ViT's forward pass, its gradient, and its gradient with every activation recomputed
(`jax.checkpoint(..., policy=nothing_saveable)`) and with per-block remat (`remat=True`), for
one CPU device, and prints XLA's temporary bytes and FLOPs of each. On an accelerator the
recomputed gradients hold far fewer activations; if XLA:CPU reports the same temporaries for
all gradients, its buffer assignment cannot be used to plan activation memory
(`experiments/plan.py` says so in its output's docs).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from ssl_jax.models import vit


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="base")
  parser.add_argument("--batch", type=int, default=16)
  args = parser.parse_args()
  images = jax.ShapeDtypeStruct((args.batch, 224, 224, 3), jnp.float32)
  results = {}
  for remat in (False, True):
    encoder = vit.Encoder(size=args.size, patch_size=16, image_size=224, dtype="bfloat16",
                          remat=remat)
    params = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), images)

    def loss(p, x, encoder=encoder):
      return jnp.sum(encoder.apply(p, x, train=True) ** 2)

    variants = {"gradient, per-block remat": jax.grad(loss)} if remat else {
        "forward": loss, "gradient": jax.grad(loss),
        "gradient, everything recomputed": jax.grad(jax.checkpoint(
            loss, policy=jax.checkpoint_policies.nothing_saveable))}
    for name, function in variants.items():
      compiled = jax.jit(function).lower(params, images).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      results[name] = {"temporaries_gb": round(compiled.memory_analysis().temp_size_in_bytes
                                               / 1e9, 3),
                       "gflops": round(float(cost.get("flops", 0.0)) / 1e9, 1)}
  print(json.dumps({"size": args.size, "batch": args.batch, **results}))


if __name__ == "__main__":
  main()
