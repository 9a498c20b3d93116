"""Keeps TensorFlow's start-up lines off the output of commands whose output is an answer.

`fill_mask` and `generate` print only their answer, yet TensorFlow, which reads a run's
dataset info there, logs on import: absl's "All log messages before absl::InitializeLog()"
and the notice that oneDNN custom operations are on, which TF_CPP_MIN_LOG_LEVEL=3 does not
silence (TensorFlow 2.21). Turning the oneDNN operations off removes the notice; in these
commands TensorFlow computes nothing. Call before anything imports TensorFlow; settings the
user exported win.
"""
import os


def silence_start_up() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
