"""RNGStateHook: what it stores, when it restores."""

import io
import logging
import random
from types import SimpleNamespace

import numpy as np
import torch

from mmseg_sam.engine.hooks import RNGStateHook, capture_rng_states, restore_rng_states


def _draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_capture_and_restore_replay_every_generator():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    states = capture_rng_states()
    first = _draw()
    _draw()
    restore_rng_states(states)
    assert _draw() == first


def test_states_survive_a_weights_only_checkpoint_round_trip():
    states = capture_rng_states()
    first = _draw()
    buffer = io.BytesIO()
    torch.save({'rng_states': dict(world_size=1, states=[states])}, buffer)
    buffer.seek(0)
    # plain tensors and python values: no allow-listed class needed
    loaded = torch.load(buffer, weights_only=True)['rng_states']['states'][0]
    restore_rng_states(loaded)
    assert _draw() == first


def _runner(iter_: int = 0) -> SimpleNamespace:
    loop = SimpleNamespace(iter=iter_, dataloader_iterator=iter(range(100)))
    return SimpleNamespace(train_loop=loop, logger=logging.getLogger('test'))


def test_validation_does_not_consume_the_training_streams():
    hook, runner = RNGStateHook(), _runner()
    states = capture_rng_states()
    expected = _draw()
    restore_rng_states(states)
    hook.before_val(runner)
    _draw()  # validation draws (dataloader seeds, random transforms)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)  # a best checkpoint saved during validation
    hook.after_val(runner)
    assert _draw() == expected
    restore_rng_states(checkpoint['rng_states']['states'][0])
    assert _draw() == expected


def test_resume_restores_after_the_dataloader_replay():
    hook = RNGStateHook()
    checkpoint = {'meta': {'iter': 3}}
    hook.before_save_checkpoint(_runner(), checkpoint)
    expected = _draw()

    runner = _runner(iter_=3)
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    loop = runner.train_loop
    for i in range(3):  # IterBasedTrainLoop's replay of the trained batches
        _draw()  # random transforms of the replayed samples
        assert next(loop.dataloader_iterator) == i
    assert _draw() == expected  # restored once the replay is over
    assert next(loop.dataloader_iterator) == 3 and isinstance(loop.dataloader_iterator, type(iter(range(1))))


def test_load_from_keeps_the_seeded_streams():
    hook = RNGStateHook()
    checkpoint = {'meta': {'iter': 3}}
    hook.before_save_checkpoint(_runner(), checkpoint)
    saved = _draw()
    runner = _runner(iter_=0)  # load_from: the loop starts at 0
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    assert next(runner.train_loop.dataloader_iterator) == 0
    assert _draw() != saved


def _distributed_rank(rank: int, world_size: int, folder: str) -> None:
    """One rank of the distributed save / resume check (run in a forked child)."""
    import torch.distributed as dist
    from mmengine.hooks import CheckpointHook

    dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=rank, world_size=world_size)
    try:
        torch.manual_seed(100 + rank)  # ranks draw different numbers (randomness.diff_rank_seed)
        np.random.seed(100 + rank)
        random.seed(100 + rank)
        saving = SimpleNamespace(
            hooks=[CheckpointHook(interval=2, by_epoch=False)],
            iter=1,  # the 2nd iteration ends: CheckpointHook(interval=2) saves now
            max_iters=10,
            logger=logging.getLogger('test'),
        )
        hook = RNGStateHook()
        hook.after_train_iter(saving, batch_idx=1)  # every rank hands rank 0 its states
        expected = _draw()
        if rank == 0:  # only rank 0 writes checkpoints
            checkpoint = {'meta': {'iter': 2}}
            hook.before_save_checkpoint(saving, checkpoint)
            torch.save(checkpoint, f'{folder}/iter_2.pth')
        dist.barrier()

        checkpoint = torch.load(f'{folder}/iter_2.pth', weights_only=True)
        resumed, runner = RNGStateHook(), _runner(iter_=2)
        resumed.after_load_checkpoint(runner, checkpoint)
        resumed.before_train(runner)
        next(runner.train_loop.dataloader_iterator)
        next(runner.train_loop.dataloader_iterator)
        assert _draw() == expected, f'rank {rank} did not get its own states back'
        torch.save(expected, f'{folder}/rank{rank}.pth')
    finally:
        dist.destroy_process_group()


def test_distributed_every_rank_resumes_its_own_streams(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context('fork')  # the children reuse this process's imports
    procs = [context.Process(target=_distributed_rank, args=(rank, 2, str(tmp_path))) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    first, second = (torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in range(2))
    assert first != second  # the ranks' streams differ, so each one got its own back
