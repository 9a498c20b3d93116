"""TFDS builders of the embedded datasets, prepared offline from files that ship inside
installed packages: `digits` (scikit-learn's UCI digits), `photos` (colour patches of the
sample photographs of scikit-learn and scikit-image) and `python_docs` (English text from
CPython's pydoc topics and standard-library docstrings). `ssl_jax.data.stream` imports them,
which registers their TFDS names."""
