"""A real one-node SLURM cluster for tests: Debian's `slurm-wlm` daemons (slurmctld, slurmd)
started on this machine from a throw-away slurm.conf, so that `sbatch`, `srun` and
`scontrol requeue` behave as on a cluster. No accounting database (slurmdbd), so `sacct`
answers "accounting storage is disabled"; submitit then reads a task's end from its result
file, which is all a sweep needs. `cred_expire=5` (default 120 s) is also how long SLURM holds
a requeued task before starting it again.

CI installs slurm-wlm (`.ci/run`); without it, or without root (slurmd launches the tasks),
`unavailable()` says why and the tests that need the cluster are skipped with that reason."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")


def unavailable() -> str:
  """Why a one-node cluster cannot start here ("" when it can)."""
  missing = [name for name in DAEMONS if shutil.which(name) is None]
  if missing:
    return f"slurm-wlm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm"
  if os.geteuid() != 0:
    return "slurmd must run as root to launch tasks"
  return ""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def cluster(folder: str, cpus: int = 2):
  """Starts slurmctld and slurmd with one `cpus`-CPU node in partition `debug`; yields the
  slurm.conf path (set SLURM_CONF to it for the client commands); stops both daemons."""
  os.makedirs(folder, exist_ok=True)
  node = socket.gethostname().split(".")[0]
  paths = {name: os.path.join(folder, name) for name in ("state", "spool")}
  for path in paths.values():
    os.makedirs(path, exist_ok=True)
  conf = os.path.join(folder, "slurm.conf")
  with open(conf, "w") as f:
    f.write("\n".join([
        "ClusterName=ssljaxtest", f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/none", "AuthInfo=cred_expire=5", "CredType=cred/none", "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={paths['state']}", f"SlurmdSpoolDir={paths['spool']}",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=1", "ReturnToService=2", "MpiDefault=none", "KillWait=10",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP", ""]))
  env = dict(os.environ, SLURM_CONF=conf)
  try:
    subprocess.run(["slurmctld", "-f", conf], env=env, check=True)
    subprocess.run(["slurmd", "-f", conf, "-N", node], env=env, check=True)
    deadline = time.time() + 60
    while True:
      state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                             text=True).stdout.strip()
      if state == "idle":
        break
      if time.time() > deadline:
        raise RuntimeError(f"the one-node SLURM cluster did not come up (node state {state!r})")
      time.sleep(0.5)
    yield conf
  finally:
    for daemon in ("slurmd", "slurmctld"):
      pid_file = os.path.join(folder, f"{daemon}.pid")
      if os.path.exists(pid_file):
        with contextlib.suppress(ProcessLookupError, ValueError):
          os.kill(int(open(pid_file).read().strip()), signal.SIGTERM)
