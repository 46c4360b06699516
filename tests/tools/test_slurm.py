"""tools/slurm_train.sh and tools/slurm_test.sh on a real single-node Slurm cluster (CPU, gloo).

The cluster (tests/slurm_cluster.py) is started for this module and always stopped;
Slurm and munge are installed with apt-get when missing. A host where that is
impossible fails here: it does not skip.
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import REPO
from tests.slurm_cluster import LocalSlurmCluster, ensure_slurm_installed
from tests.tools.test_dist_launchers import free_port, last_metrics, launch_env, run, tiny_dist_config


@pytest.fixture(scope='module')
def slurm_cluster():
    seconds = ensure_slurm_installed()
    print(f'\nSlurm and munge install: {seconds:.1f} s' if seconds else '\nSlurm and munge already installed')
    # munged wants every directory up to its socket traversable by all; pytest's base
    # temp dir is private (0700), so the cluster lives in a directory of its own.
    root = Path(tempfile.mkdtemp(prefix='mmseg_sam_slurm_'))
    cluster = LocalSlurmCluster(root, cpus=2)
    start = time.perf_counter()
    try:
        cluster.start()
        print(f'cluster {cluster.node} up in {time.perf_counter() - start:.1f} s ({root})')
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_on(cluster: LocalSlurmCluster, cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """``run`` with the cluster's daemon logs in the failure message."""
    try:
        return run(cmd, cwd, env)
    except AssertionError as e:
        raise AssertionError(f'{e}\n{cluster.logs(tail=3000)}') from None


@pytest.mark.slow
def test_cluster_runs_two_tasks(slurm_cluster):
    """srun -n2 gives each task the variables the slurm launcher reads."""
    out = run_on(
        slurm_cluster,
        [
            'srun',
            '--ntasks=2',
            '--cpus-per-task=1',
            'sh',
            '-c',
            'echo task $SLURM_PROCID/$SLURM_NTASKS $SLURM_NODELIST',
        ],
        cwd=REPO,
        env=slurm_cluster.env(),
    )
    lines = sorted(line for line in out.splitlines() if line.startswith('task '))
    assert lines == [f'task 0/2 {slurm_cluster.node}', f'task 1/2 {slurm_cluster.node}'], out


@pytest.mark.slow
def test_slurm_train_then_test(slurm_cluster, tmp_path, sam_checkpoint):
    data = tmp_path / 'data'
    generate_synthetic_dataset(data, num_train=8, num_val=2, img_size=64)
    cfg = tiny_dist_config(tmp_path, data, sam_checkpoint, batch_size=2, max_iters=2)
    # 2 tasks on the 2-CPU node; no GPU GRES on this cluster
    env = slurm_cluster.env(
        launch_env(GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1', GRES='none', MASTER_PORT=str(free_port()))
    )
    work = tmp_path / 'work'
    # WORK_DIR as the 4th argument (mmdet style)
    log = run_on(
        slurm_cluster,
        [str(REPO / 'tools/slurm_train.sh'), slurm_cluster.partition, 'sam_train', str(cfg), str(work)],
        cwd=tmp_path,
        env=env,
    )
    assert "initialised the gloo process group for the 'slurm' launcher (rank 0 of 2)" in log
    assert 'Distributed launcher: slurm' in log and 'GPU number: 2' in log
    assert 'Iter(train) [2/2]' in log
    assert (work / 'iter_2.pth').is_file()
    trained = last_metrics(work)  # the final validation, over both ranks' images
    assert {'aAcc', 'mIoU', 'mDice'} <= set(trained)

    env['MASTER_PORT'] = str(free_port())
    out = tmp_path / 'pred'
    log = run_on(
        slurm_cluster,
        [
            str(REPO / 'tools/slurm_test.sh'),
            slurm_cluster.partition,
            'sam_test',
            str(cfg),
            str(work / 'iter_2.pth'),
            '--work-dir',
            str(tmp_path / 'test'),
            '--out',
            str(out),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert 'Distributed launcher: slurm' in log
    tested = last_metrics(tmp_path / 'test')
    assert {'aAcc', 'mIoU', 'mDice'} <= set(tested)
    for key in ('aAcc', 'mIoU', 'mDice'):  # the same weights on the same 2 images
        assert tested[key] == pytest.approx(trained[key], abs=1e-6), (tested, trained)
    assert len(list(out.glob('*.png'))) == 2
    slurm_cluster.wait_idle(timeout=60)  # both jobs ended and freed the node


@pytest.mark.slow
@pytest.mark.parametrize(
    'args, py_args',
    [
        (['work'], ['--work-dir=work']),  # mmdet style: WORK_DIR 4th
        (['--work-dir', 'work', '--amp'], ['--work-dir', 'work', '--amp']),  # mmseg style
        ([], []),
    ],
)
def test_slurm_train_passes_arguments(tmp_path, args, py_args):
    """The srun command line, through a stand-in srun that prints its arguments."""
    (tmp_path / 'srun').write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    (tmp_path / 'srun').chmod(0o755)
    env = launch_env(
        PATH=f'{tmp_path}:/usr/bin:/bin', GPUS='8', GPUS_PER_NODE='4', SRUN_ARGS='--time=5 --quiet'
    )
    out = run([str(REPO / 'tools/slurm_train.sh'), 'part', 'job', 'a b.py', *args], tmp_path, env)
    argv = [line for line in out.splitlines() if not line.startswith('+')]  # without bash's trace
    assert argv == [
        '-p',
        'part',
        '--job-name=job',
        '--gres=gpu:4',
        '--ntasks=8',
        '--ntasks-per-node=4',
        '--cpus-per-task=5',
        '--kill-on-bad-exit=1',
        '--time=5',
        '--quiet',
        sys.executable,
        '-u',
        str(REPO / 'tools/train.py'),
        'a b.py',
        '--launcher=slurm',
        *py_args,
    ]
