"""A real single-node SLURM on loopback for tests (root only; Debian's slurm-wlm and munge).

    ensure_installed()                     # scripts/install_system_deps.sh when missing
    cluster = start_local_slurm()          # munged, slurmctld, slurmd; waits for the node idle
    run_workflow(workdir, [*slurm_profile_args(), ...], env=cluster.env)
    slurm_jobs_by_rule(workdir)            # {job id: rule} from .snakemake/slurm_logs
    cluster.completed_jobs()               # {job id: fields} from the job-completion log
    cluster.cleanup()                      # cancel jobs, stop the daemons, remove the folder

Everything lives in a fresh folder under /tmp: a generated slurm.conf (this machine's CPUs
and a bit less than its memory, one partition ``debug``, free loopback ports, daemons bound
to 127.0.0.1), a munge key and socket, state, spool and logs. Clients and daemons find it
through ``SLURM_CONF`` (in ``cluster.env``, which also puts an ``srun`` wrapper first on PATH,
see write_srun_wrapper); munge's socket is named in slurm.conf (``AuthInfo=socket=...``).
No accounting database (``accounting_storage/none``: sacct cannot answer); finished jobs stay
visible to ``squeue`` for ``MinJobAge`` seconds and ``jobcomp/filetxt`` records each one.
The node has stand-in GPUs (gres_conf_text) so that GPU requests are scheduled as asked.
Every wait is bounded; a daemon that does not come up fails with the daemons' logs, and
nothing of the cluster is left running (processes are found by their SLURM_CONF).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workflow_utils import RUN_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm"
INSTALL_SCRIPT = REPO / "scripts" / "install_system_deps.sh"
NODE = "wsss-node"
PARTITION = "debug"
# commands the local cluster needs -> Debian package that provides them
REQUIRED_COMMANDS = {
    "munged": "munge",
    "mungekey": "munge",
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
    "squeue": "slurm-wlm",
    "sinfo": "slurm-wlm",
    "scancel": "slurm-wlm",
    "scontrol": "slurm-wlm",
    "srun": "slurm-wlm",
}
SUBMITTED_RE = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


class SlurmError(RuntimeError):
    """The local cluster could not be installed, started or stopped."""


def missing_commands() -> list[str]:
    return [cmd for cmd in REQUIRED_COMMANDS if shutil.which(cmd) is None]


def ensure_installed(timeout: float = 900) -> None:
    """Install slurm-wlm and munge with scripts/install_system_deps.sh when any is missing.

    Raises SlurmError with the installer's output when it fails (no silent skip)."""
    missing = missing_commands()
    if not missing:
        return
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        raise SlurmError(f"{INSTALL_SCRIPT} did not finish in {timeout:.0f} s") from err
    if proc.returncode != 0:
        raise SlurmError(
            f"{INSTALL_SCRIPT} failed (exit {proc.returncode}) installing "
            f"{sorted({REQUIRED_COMMANDS[c] for c in missing})}:\n{proc.stdout}{proc.stderr}"
        )
    still = missing_commands()
    if still:
        raise SlurmError(f"{INSTALL_SCRIPT} ran but these commands are still missing: {still}")


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def total_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmError(f"{meminfo} has no MemTotal line")


def node_memory_mb(total_mb: int) -> int:
    """RealMemory for the node: 90% of the machine, at most total - 512 MB, at least 256 MB.

    slurmd drains a node whose configured memory exceeds what it measures, so stay below."""
    return max(256, min(int(total_mb * 0.9), total_mb - 512))


def slurm_conf_text(
    root: Path,
    *,
    cpus: int,
    memory_mb: int,
    ctld_port: int,
    slurmd_port: int,
    munge_socket: Path,
    gpus: int = 1,
    cluster_name: str = "wsss",
) -> str:
    """slurm.conf for one node on loopback with state, spool and logs under ``root``.

    ``gpus`` stand-in GPUs (see gres_conf_text) let jobs that ask for ``--gpus`` be scheduled
    on a machine without one; their code runs on CPU."""
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    return "\n".join(
        [
            f"ClusterName={cluster_name}",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            # bind to the configured (loopback) addresses, not to every interface
            "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={root / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/builtin",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            # sacct-independent record of every finished job
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={root / 'log' / 'jobcomp.log'}",
            # finished jobs stay visible to squeue this long (the profile's status checks)
            "MinJobAge=300",
            "ReturnToService=2",
            "InactiveLimit=0",
            "KillWait=5",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "GresTypes=gpu",
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={cpus} "
            f"RealMemory={memory_mb}{gres} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


# Character devices that stand in for GPUs: slurmd drops a GPU without a device file, and
# nothing opens these (no cgroup device constraint here); the job's code sees no CUDA device.
STAND_IN_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full")


def gres_conf_text(gpus: int) -> str:
    """gres.conf beside slurm.conf: ``gpus`` stand-in GPUs on the node."""
    if not 0 <= gpus <= len(STAND_IN_GPU_DEVICES):
        raise ValueError(f"gpus must be in [0, {len(STAND_IN_GPU_DEVICES)}], got {gpus}")
    return "".join(f"NodeName={NODE} Name=gpu File={dev}\n" for dev in STAND_IN_GPU_DEVICES[:gpus])


def parse_jobcomp(text: str) -> dict[str, dict[str, str]]:
    """jobcomp/filetxt lines (``JobId=3 UserId=root(0) ... JobState=COMPLETED ...``) by job id."""
    jobs: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def submitted_job_ids(snakemake_log: str) -> dict[str, str]:
    """{snakemake job id: SLURM job id} from the slurm executor's submission lines."""
    return {m.group(1): m.group(2) for m in SUBMITTED_RE.finditer(snakemake_log)}


def slurm_jobs_by_rule(workdir: Path) -> dict[str, str]:
    """{SLURM job id: rule} from the executor's per-job logs in ``workdir``
    (``.snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<jobid>.log``; the profile keeps them
    for successful jobs too)."""
    jobs = {}
    for rule_dir in (workdir / ".snakemake" / "slurm_logs").glob("rule_*"):
        for log in rule_dir.rglob("*.log"):
            jobs[log.stem] = rule_dir.name.removeprefix("rule_")
    return jobs


@dataclass
class LocalSlurm:
    """A running single-node cluster; ``env`` is what clients (sbatch, snakemake) need."""

    root: Path
    conf: Path
    env: dict[str, str]
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    stopped: bool = False
    startup_seconds: float = 0.0

    def run(self, args: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command (sinfo, squeue, scontrol, ...) against this cluster."""
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def node_state(self) -> str:
        proc = self.run(["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], timeout=15)
        return proc.stdout.strip() if proc.returncode == 0 else f"sinfo failed: {proc.stderr}"

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` fields (TRES: cpu, mem; TresPerJob: the GPU request); a
        finished job stays visible for MinJobAge (300 s)."""
        proc = self.run(["scontrol", "show", "job", "--oneliner", job_id], timeout=15)
        if proc.returncode != 0:
            raise SlurmError(f"scontrol show job {job_id} failed: {proc.stderr.strip()}")
        return dict(m.groups() for m in re.finditer(r"(\w[\w:/]*)=(\S*)", proc.stdout))

    def completed_jobs(self) -> dict[str, dict[str, str]]:
        """Finished jobs from the job-completion log (independent of sacct and squeue)."""
        path = self.logs["jobcomp"]
        return parse_jobcomp(path.read_text()) if path.exists() else {}

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else "(no file)"
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {name}: {path}\n{tail}")
        return "\n".join(parts)

    def cluster_processes(self) -> list[int]:
        """Ids of live processes that belong to this cluster: the daemons we started and
        everything they started (slurmstepd, job scripts, srun), found by SLURM_CONF=our conf
        in their environment."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = {p.pid for p in self.procs.values() if p.poll() is None}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                found.add(int(entry.name))
        return sorted(found)

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, and kill anything they left.

        Idempotent. Raises SlurmError if a process of this cluster survives SIGKILL."""
        if self.stopped:
            return
        self.stopped = True
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", "--full", "--partition", PARTITION], timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is not None:
                _terminate(proc, timeout=timeout / 3)
        leftovers = self.cluster_processes()
        for pid in leftovers:
            _kill_pid(pid)
        deadline = time.monotonic() + 5
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.1)
            leftovers = self.cluster_processes()
        if leftovers:
            raise SlurmError(f"processes of the local SLURM survived SIGKILL: {leftovers}")

    def cleanup(self) -> None:
        """Stop, then remove the cluster's folder (its logs go with it)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def write_srun_wrapper(bin_dir: Path, conf: Path) -> Path:
    """An ``srun`` that sets SLURM_CONF, first on the PATH of the cluster's clients.

    Inside a job, the slurm-jobstep executor runs the rule with ``srun`` after removing every
    SLURM_* variable, SLURM_CONF included; a real cluster's srun then finds its config at the
    default place (/etc/slurm/slurm.conf or slurmd's configless cache). This cluster leaves
    /etc alone, so the wrapper names the generated config instead."""
    real = shutil.which("srun")
    if real is None:
        raise SlurmError(f"no srun on PATH: run {INSTALL_SCRIPT} as root")
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "srun"
    wrapper.write_text(
        f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(conf))} exec {shlex.quote(real)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir


def _terminate(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for(
    condition, timeout: float, alive: subprocess.Popen | None = None, interval: float = 0.25
) -> bool:
    """Poll ``condition`` until true or ``timeout``; give up early when ``alive`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if alive is not None and alive.poll() is not None:
            return False
        time.sleep(interval)
    return bool(condition())


def _start_daemon(cluster: LocalSlurm, name: str, args: list[str], log: Path) -> subprocess.Popen:
    """Start a daemon in the foreground (its own session), stdout/stderr to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args,
            env=cluster.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster.procs[name] = proc
    return proc


def _fail(cluster: LocalSlurm, message: str) -> SlurmError:
    detail = cluster.log_tail()
    try:
        cluster.cleanup()
    except SlurmError as err:
        detail += f"\n{err}"
    return SlurmError(f"{message}\n{detail}")


def start_local_slurm(gpus: int = 1, startup_timeout: float = 60) -> LocalSlurm:
    """Generate the config, start munged, slurmctld and slurmd, wait for the node to be idle.

    Needs root and the commands of REQUIRED_COMMANDS (see ensure_installed)."""
    missing = missing_commands()
    if missing:
        raise SlurmError(f"missing commands {missing}: run {INSTALL_SCRIPT} as root")
    # munged insists that the socket's folder be reachable by everyone: a 0755 folder in /tmp
    root = Path(tempfile.mkdtemp(prefix="wsss-slurm-"))
    root.chmod(0o755)
    for sub in ("state", "spool", "run", "log", "munge"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o755)
    (root / "plugstack.conf").write_text("")
    (root / "gres.conf").write_text(gres_conf_text(gpus))
    munge_socket = root / "munge" / "munge.socket"
    ctld_port, slurmd_port = free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(
        slurm_conf_text(
            root,
            cpus=usable_cpus(),
            memory_mb=node_memory_mb(total_memory_mb()),
            ctld_port=ctld_port,
            slurmd_port=slurmd_port,
            munge_socket=munge_socket,
            gpus=gpus,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update(
        {
            "SLURM_CONF": str(conf),
            "MUNGE_SOCKET": str(munge_socket),
            "PATH": f"{write_srun_wrapper(root / 'bin', conf)}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    logs = {
        "munged": root / "log" / "munged.log",
        "slurmctld": root / "log" / "slurmctld.log",
        "slurmd": root / "log" / "slurmd.log",
        "slurmctld.out": root / "log" / "slurmctld.out",
        "slurmd.out": root / "log" / "slurmd.out",
        "jobcomp": root / "log" / "jobcomp.log",
    }
    cluster = LocalSlurm(root=root, conf=conf, env=env, logs=logs)
    started = time.monotonic()
    try:
        _start_daemons(cluster, munge_socket, startup_timeout)
    except BaseException:  # a failed start (or Ctrl-C) leaves nothing running behind
        cluster.cleanup()
        raise
    cluster.startup_seconds = time.monotonic() - started
    return cluster


def _start_daemons(cluster: LocalSlurm, munge_socket: Path, startup_timeout: float) -> None:
    """munged, then slurmctld (until it answers), then slurmd (until the node is idle)."""
    root, logs = cluster.root, cluster.logs
    key = root / "munge" / "munge.key"
    subprocess.run(
        ["mungekey", "--create", f"--keyfile={key}", "--bits=1024"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    _start_daemon(
        cluster,
        "munged",
        [
            "munged",
            "--foreground",
            "--force",
            f"--socket={munge_socket}",
            f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
            "--num-threads=2",
        ],
        logs["munged"],
    )
    if not _wait_for(munge_socket.exists, timeout=15, alive=cluster.procs["munged"]):
        raise _fail(cluster, f"munged did not create {munge_socket} within 15 s")

    _start_daemon(cluster, "slurmctld", ["slurmctld", "-D", "-i"], logs["slurmctld.out"])
    ping = lambda: cluster.run(["scontrol", "ping"], timeout=10).returncode == 0  # noqa: E731
    if not _wait_for(ping, timeout=startup_timeout, alive=cluster.procs["slurmctld"]):
        raise _fail(
            cluster, f"slurmctld did not answer `scontrol ping` ({startup_timeout} s bound)"
        )

    _start_daemon(cluster, "slurmd", ["slurmd", "-D", "-N", NODE], logs["slurmd.out"])
    # idle: ready; inval/drain*: slurmd registered with less than slurm.conf says (final)
    settled = lambda: cluster.node_state().startswith(("idle", "inval", "drain"))  # noqa: E731
    _wait_for(settled, timeout=startup_timeout, alive=cluster.procs["slurmd"])
    state = cluster.node_state()
    if state != "idle":
        raise _fail(cluster, f"node {NODE} is {state!r}, not idle ({startup_timeout} s bound)")


def slurm_profile_args(first_status_check_s: int = 1) -> list[str]:
    """Snakemake arguments for a run with profiles/slurm, as a user gives them, except that
    the first job-status check comes after ``first_status_check_s`` seconds instead of the
    profile's 40 (test jobs last seconds; later checks back off by 10 s each)."""
    return [
        "--profile",
        str(PROFILE),
        "--workflow-profile",
        "none",
        "--slurm-init-seconds-before-status-checks",
        str(first_status_check_s),
    ]


def snakemake_command() -> list[str]:
    """Snakemake of the interpreter running the tests (the project's virtualenv)."""
    return [sys.executable, "-m", "snakemake"]


def run_workflow(
    workdir: Path,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess:
    """Run ``snakemake <args>`` in ``workdir`` and return the finished process (text output).

    ``env`` is the cluster's ``LocalSlurm.env`` for a SLURM run, None for a local run."""
    return subprocess.run(
        [*snakemake_command(), *args],
        cwd=workdir,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
