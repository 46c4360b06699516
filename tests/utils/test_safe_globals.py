import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmseg_sam  # noqa: F401  (allow-lists on import)


def test_mmengine_message_hub_content_loads_with_weights_only(tmp_path):
    buffer = HistoryBuffer()
    for v in (0.5, 0.25, 3):
        buffer.update(v)
    checkpoint = {
        'meta': {'seed': np.int64(0), 'lr': np.float64(1e-4), 'dataset_meta': {'classes': ('a', 'b')}},
        'message_hub': {'log_scalars': {'train/loss': buffer}, 'runtime_info': {'iter': 4}},
        'state_dict': {'w': torch.ones(2)},
    }
    torch.save(checkpoint, tmp_path / 'ckpt.pth')
    loaded = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx(buffer.mean())
    assert loaded['meta']['lr'] == 1e-4


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    """A crafted pickle using getattr to reach anything else is refused."""

    class _Lookup:
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            return (getattr, (HistoryBuffer, self.name))

    torch.save({'x': _Lookup('mean')}, tmp_path / 'ok.pth')
    assert torch.load(tmp_path / 'ok.pth', weights_only=True)['x'] is HistoryBuffer.mean
    for name in ('__init__', 'update', '__class__'):
        torch.save({'x': _Lookup(name)}, tmp_path / 'evil.pth')
        with pytest.raises(pickle.UnpicklingError, match=f"getattr.*'{name}'.*only HistoryBuffer statistics"):
            torch.load(tmp_path / 'evil.pth', weights_only=True)


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_checkpoint_that_runs_code_is_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError, match='getcwd'):
        torch.load(path, weights_only=True)
