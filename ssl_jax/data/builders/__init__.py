"""TFDS builders of the embedded datasets, prepared offline from files that ship inside
installed packages or synthesised on the spot: `digits` (scikit-learn's UCI digits), `photos`
(colour patches of the sample photographs of scikit-learn and scikit-image), `python_docs`
(English text from CPython's pydoc topics and standard-library docstrings), and `vowels`
(American-English vowels synthesised as raw 8 kHz waveforms by a formant synthesiser with
Peterson & Barney's formants and 12 synthetic speakers). `ssl_jax.data.stream` imports them,
which registers their TFDS names."""
