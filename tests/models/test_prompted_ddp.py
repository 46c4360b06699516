"""Distributed prompted training weighs every instance of the global batch the same.

Two processes with one image each (1 and 3 instances), through the project's DDP wrapper,
against one process with both images: the trainable parameters' gradients are equal, with
the rounds in one graph and with each round back-propagated on its own (the default).
"""

import multiprocessing
from pathlib import Path

import pytest
import torch
from mmseg.registry import MODELS

from tests.conftest import TINY_IMG, tiny_prompted_cfg
from tests.models.test_sam_prompted_head import MEAN, STD, _sample

LORA = dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v')))


def _batch() -> tuple[torch.Tensor, list]:
    """Two images with 1 and 3 instances, box prompts (no random draw anywhere)."""
    images = torch.randint(0, 256, (2, 3, TINY_IMG, TINY_IMG), generator=torch.Generator().manual_seed(4))
    masks = torch.zeros(4, TINY_IMG, TINY_IMG, dtype=torch.bool)
    masks[0, 8:30, 10:36] = True
    masks[1, 4:20, 4:20] = True
    masks[2, 30:50, 10:30] = True
    masks[3, 40:60, 36:60] = True
    boxes = torch.tensor([[10, 8, 35, 29], [4, 4, 19, 19], [10, 30, 29, 49], [36, 40, 59, 59]]).float()
    samples = [_sample(masks[:1], boxes=boxes[:1]), _sample(masks[1:], boxes=boxes[1:])]
    return (images.float() - MEAN) / STD, samples


def _gradients(
    checkpoint: str, images: torch.Tensor, samples: list, round_memory: str, ddp: bool = False
) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # the same LoRA initialisation in every process
    model = MODELS.build(tiny_prompted_cfg(checkpoint, head=dict(round_memory=round_memory), **LORA))
    model.train()
    if ddp:
        from mmseg_sam.engine import SAMDistributedDataParallel  # noqa: PLC0415

        wrapped = SAMDistributedDataParallel(model)
        assert wrapped.find_unused_parameters  # the prompt encoder's weights are conditionally used
        losses = wrapped(images, samples, mode='loss')
    else:
        losses = model.loss(images, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _rank(rank: int, world_size: int, folder: str, checkpoint: str, round_memory: str) -> None:
    import torch.distributed as dist

    dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=rank, world_size=world_size)
    try:
        images, samples = _batch()
        grads = _gradients(
            checkpoint, images[rank : rank + 1], samples[rank : rank + 1], round_memory, ddp=True
        )
        if rank == 0:
            torch.save(grads, f'{folder}/grads.pth')
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize('round_memory', ['backward', 'keep'])
def test_two_processes_equal_one_with_unequal_instance_counts(tmp_path: Path, sam_checkpoint, round_memory):
    images, samples = _batch()
    expected = _gradients(str(sam_checkpoint), images, samples, round_memory)
    context = multiprocessing.get_context('fork')  # the children reuse this process's imports
    procs = [
        context.Process(target=_rank, args=(rank, 2, str(tmp_path), str(sam_checkpoint), round_memory))
        for rank in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
    assert [proc.exitcode for proc in procs] == [0, 0]
    got = torch.load(tmp_path / 'grads.pth', weights_only=True)
    assert set(got) == set(expected) and any(k.startswith('backbone.') for k in got)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-7, msg=name)
