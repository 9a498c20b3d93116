"""Test session setup: 8 fake CPU devices that compile fast (before jax is imported), quiet
TensorFlow."""
import os
import shutil
import sys
import tempfile

# Most of the suite's time is XLA compiling tiny programs: LLVM's optimisation level 0 compiles
# them about a fifth faster (measured on the language/CPC and probe tests) and changes no
# numerics the tests check (fast-math stays off).
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: an end-to-end run (deselect with -m 'not slow')")
  # One persistent XLA compilation cache for the session: the xdist workers and every
  # subprocess a test starts (they inherit the environment) load a program another already
  # compiled (the tiny digits step recurs in many tests) instead of compiling it again. Set
  # before any test module imports jax; removed when the session ends.
  if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    config.xla_cache_dir = tempfile.mkdtemp(prefix="ssl_jax_tests_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = config.xla_cache_dir
    # Every program, not only those over jax's default 1 s of compiling: most here take less.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
      os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
      config.xla_cache_min_time_set = True


def pytest_unconfigure(config):
  folder = getattr(config, "xla_cache_dir", None)
  if folder:
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    if getattr(config, "xla_cache_min_time_set", False):
      os.environ.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
    shutil.rmtree(folder, ignore_errors=True)
