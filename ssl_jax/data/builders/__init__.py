"""TFDS builders of the embedded datasets, prepared offline from files that ship inside
installed packages: `digits` (scikit-learn's UCI digits) and `photos` (colour patches of the
sample photographs of scikit-learn and scikit-image). `ssl_jax.data.pipeline` imports them,
which registers their TFDS names."""
