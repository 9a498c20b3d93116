"""Test session setup: 8 fake CPU devices that compile fast (before jax is imported), quiet
TensorFlow."""
import os
import sys

# Most of the suite's time is XLA compiling tiny programs: LLVM's optimisation level 0 compiles
# them about a fifth faster (measured on the language/CPC and probe tests) and changes no
# numerics the tests check (fast-math stays off).
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: an end-to-end run (deselect with -m 'not slow')")
