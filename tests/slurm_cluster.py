"""A throw-away single-node Slurm cluster (munge + slurmctld + slurmd) for tests.

Debian's ``slurm-wlm`` and ``munge`` packages are enough: :func:`ensure_slurm_installed`
installs them with apt-get when a binary is missing. :class:`LocalSlurmCluster` writes a
``slurm.conf`` for one node (the host's short name, loopback address), a munge key of its
own, and keeps every socket, state, spool, pid and log file under one directory, on free
non-default ports, so it touches nothing of a system Slurm or munge. Clients (``srun``,
``scontrol``) reach it through ``SLURM_CONF`` (see :meth:`LocalSlurmCluster.env`)::

    with LocalSlurmCluster(tmp_dir) as cluster:
        subprocess.run(['srun', '-n2', 'hostname'], env=cluster.env(), check=True)

The daemons run in the foreground as children of this process and are stopped by their
process ids. The node has no GPU GRES (Slurm drops GPUs without device files), so jobs
must not ask for ``--gres=gpu:N`` (the launchers take ``GRES=none``).

Run ``python tests/slurm_cluster.py DIR`` to start one by hand (Ctrl-C or ``kill`` stops it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ['SLURM_BINARIES', 'LocalSlurmCluster', 'ensure_slurm_installed']

#: Binaries the cluster needs, and the Debian packages that provide them.
SLURM_BINARIES = ('munged', 'slurmctld', 'slurmd', 'srun', 'scontrol', 'sinfo', 'squeue', 'scancel')
SLURM_PACKAGES = ('slurm-wlm', 'munge')
_SBIN = ('/usr/sbin', '/sbin')


def _which(binary: str) -> str | None:
    path = os.pathsep.join([os.environ.get('PATH', ''), *_SBIN])
    return shutil.which(binary, path=path)


def ensure_slurm_installed(timeout: float = 900) -> float:
    """Install Debian's ``slurm-wlm`` and ``munge`` with apt-get if a binary is missing.

    Args:
        timeout: seconds allowed for ``apt-get update`` and for ``apt-get install``, each.

    Returns:
        float: seconds spent installing (0.0 when everything was present).

    Raises:
        RuntimeError: a binary is missing and apt-get is unavailable, not run as root, or
            failed (its output is in the message).
    """
    missing = [b for b in SLURM_BINARIES if _which(b) is None]
    if not missing:
        return 0.0
    apt = shutil.which('apt-get')
    if apt is None or os.geteuid() != 0:
        raise RuntimeError(
            f'Slurm binaries {missing} are missing and cannot be installed here (needs apt-get as root; '
            f'euid={os.geteuid()}, apt-get={apt}): install the packages {list(SLURM_PACKAGES)}'
        )
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    start = time.perf_counter()
    for cmd in (
        [apt, 'update', '-qq'],
        [apt, 'install', '-y', '-qq', '--no-install-recommends', *SLURM_PACKAGES],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}'
            )
    still = [b for b in SLURM_BINARIES if _which(b) is None]
    if still:
        raise RuntimeError(f'apt-get installed {list(SLURM_PACKAGES)} but {still} are still missing')
    return time.perf_counter() - start


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on the loopback interface now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(('127.0.0.1', 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalSlurmCluster:
    """One Slurm node on this host, with its own munge daemon, all files under ``root``.

    Args:
        root: directory for the configuration, key, sockets, state, spool and logs
            (created; made world-traversable, as munged requires for its socket).
        cpus: CPUs the node advertises (``CPUs=``).
        partition: name of the (default) partition.
    """

    def __init__(self, root: str | Path, cpus: int = 2, partition: str = 'debug') -> None:
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise ValueError(f'cpus must be a positive int, got {cpus!r}')
        self.root = Path(root).resolve()
        self.cpus, self.partition = cpus, partition
        self.node = socket.gethostname().split('.')[0]
        self.conf = self.root / 'slurm.conf'
        self.munge_socket = self.root / 'munge' / 'munge.socket'
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}

    # -- configuration -------------------------------------------------------------
    def _write_config(self) -> None:
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        for sub in ('munge', 'state', 'spool', 'log'):
            (r / sub).mkdir(parents=True, exist_ok=True)
        # munged wants its socket directory traversable by all, and every directory
        # up to it not writable by others (sticky /tmp is fine).
        for d in (r, r / 'munge'):
            d.chmod(0o755)
        key = r / 'munge' / 'munge.key'
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        lines = [
            'ClusterName=mmsegsamtest',
            f'SlurmctldHost={self.node}(127.0.0.1)',
            f'SlurmctldPort={ctld_port}',
            f'SlurmdPort={slurmd_port}',
            'SlurmUser=root',
            'SlurmdUser=root',
            'AuthType=auth/munge',
            'CredType=cred/munge',
            f'AuthInfo=socket={self.munge_socket}',
            f'StateSaveLocation={r / "state"}',
            f'SlurmdSpoolDir={r / "spool"}',
            f'SlurmctldPidFile={r / "slurmctld.pid"}',
            f'SlurmdPidFile={r / "slurmd.pid"}',
            f'SlurmctldLogFile={r / "log" / "slurmctld.log"}',
            f'SlurmdLogFile={r / "log" / "slurmd.log"}',
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'SchedulerType=sched/builtin',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_CPU',
            'MpiDefault=none',
            'ReturnToService=2',
            'JobCompType=jobcomp/none',
            'JobAcctGatherType=jobacct_gather/none',
            'AccountingStorageType=accounting_storage/none',
            # generous: on a loaded machine a late ping reply must not mark the node DOWN
            # (which cancels its jobs)
            'SlurmctldTimeout=300',
            'SlurmdTimeout=300',
            'MessageTimeout=60',
            'KillWait=5',
            'InactiveLimit=0',
            'MinJobAge=30',
            f'NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN',
            f'PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP',
        ]
        self.conf.write_text('\n'.join(lines) + '\n')

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for Slurm clients of this cluster (``base`` or os.environ, plus SLURM_CONF)."""
        env = dict(os.environ if base is None else base)
        env['SLURM_CONF'] = str(self.conf)
        env['PATH'] = os.pathsep.join([env.get('PATH', ''), *_SBIN])
        # a caller inside another Slurm allocation must not leak its job into this one
        for name in [k for k in env if k.startswith('SLURM_') and k != 'SLURM_CONF']:
            del env[name]
        return env

    # -- daemons -------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = self.root / 'log' / f'{name}.out'
        self._logs[name] = log
        with open(log, 'wb') as out:
            self._procs[name] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env()
            )

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f'{name} exited with {proc.returncode}:\n{self.logs(name)}')

    def logs(self, name: str | None = None, tail: int = 4000) -> str:
        """The last ``tail`` characters of a daemon's output and log file (all daemons when None)."""
        names = [name] if name else list(self._logs)
        parts = []
        for n in names:
            for path in (self._logs.get(n), self.root / 'log' / f'{n}.log'):
                if path is not None and path.is_file():
                    parts.append(f'--- {path}\n{path.read_text(errors="replace")[-tail:]}')
        return '\n'.join(parts)

    def _wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if check():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f'{what} not reached within {timeout} s:\n{self.logs()}')
            time.sleep(0.5)

    def _run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def start(self, timeout: float = 90) -> LocalSlurmCluster:
        """Start munged, slurmctld and slurmd; return when the node is idle.

        Raises:
            RuntimeError: a daemon exited (its log is in the message).
            TimeoutError: the node did not become idle within ``timeout`` seconds.
        """
        missing = [b for b in SLURM_BINARIES if _which(b) is None]
        if missing:
            raise RuntimeError(f'Slurm binaries {missing} not found; call ensure_slurm_installed() first')
        self._write_config()
        munge_dir = self.root / 'munge'
        self._spawn(
            'munged',
            [
                _which('munged'),
                '--foreground',
                f'--socket={self.munge_socket}',
                f'--key-file={munge_dir / "munge.key"}',
                f'--pid-file={munge_dir / "munged.pid"}',
                f'--seed-file={munge_dir / "munged.seed"}',
                f'--log-file={self.root / "log" / "munged.log"}',
            ],
        )
        self._wait('munged socket', self.munge_socket.exists, timeout)
        self._spawn('slurmctld', [_which('slurmctld'), '-D', '-c', '-f', str(self.conf)])
        self._wait('slurmctld answering', lambda: self._run('scontrol', 'ping').returncode == 0, timeout)
        self._spawn('slurmd', [_which('slurmd'), '-D', '-f', str(self.conf), '-N', self.node])
        self.wait_idle(timeout)
        return self

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the node is idle (e.g. a finished job's COMPLETING state is over).

        Raises:
            RuntimeError: the node is drained, invalid, down or failed, or a daemon exited.
            TimeoutError: not idle within ``timeout`` seconds.
        """
        self._wait('node idle', self._node_idle, timeout)

    def _node_idle(self) -> bool:
        state = self.node_state()
        if any(bad in state for bad in ('DRAIN', 'INVAL', 'DOWN', 'FAIL')):
            reason = self._run('sinfo', '--noheader', '--Node', '--format=%E').stdout.strip()
            raise RuntimeError(f'node {self.node} is {state} ({reason}):\n{self.logs()}')
        return state.startswith('IDLE')

    def node_state(self) -> str:
        """The node's state as ``sinfo`` prints it (upper case, e.g. ``'IDLE'``), '' if unknown."""
        proc = self._run('sinfo', '--noheader', '--Node', '--format=%T')
        return proc.stdout.strip().upper() if proc.returncode == 0 else ''

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (by the ids this object started)."""
        if 'slurmctld' in self._procs and self._procs['slurmctld'].poll() is None:
            self._run('scancel', '--full', f'--partition={self.partition}', timeout=timeout)
            # let the steps of cancelled jobs end while slurmd still runs
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                proc = self._run('squeue', '--noheader', '--format=%i')
                if proc.returncode != 0 or not proc.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ('slurmd', 'slurmctld', 'munged'):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def __enter__(self) -> LocalSlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(
            f'usage: {sys.argv[0]} DIR  (starts a local Slurm cluster under DIR; Ctrl-C or kill stops it)'
        )
    # Ctrl-C or a plain kill stops the daemons too (also where the shell ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ensure_slurm_installed()
    with LocalSlurmCluster(sys.argv[1]) as cluster:
        print(f'export SLURM_CONF={cluster.conf}', flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
