"""MainProcessLoggerHook: the end-of-test JSON is written by the main process only."""

import json
from types import SimpleNamespace

import pytest

from mmseg_sam.engine.hooks import MainProcessLoggerHook, logger_hook


@pytest.mark.parametrize('main', [True, False])
def test_only_the_main_process_writes_the_test_json(tmp_path, monkeypatch, main):
    lines = []
    runner = SimpleNamespace(
        log_dir=str(tmp_path),
        test_dataloader=[0, 1],
        logger=SimpleNamespace(info=lines.append),
        log_processor=SimpleNamespace(
            get_log_after_epoch=lambda runner, n, mode, with_non_scalar: (
                {'mIoU': 41.5, 'n': n},
                f'{mode}: mIoU 41.5',
            )
        ),
    )
    hook = MainProcessLoggerHook()
    hook.json_log_path = 'run.json'
    monkeypatch.setattr(logger_hook, 'is_main_process', lambda: main)
    hook.after_test_epoch(runner, metrics={'mIoU': 41.5})
    assert lines == ['test: mIoU 41.5']  # every rank logs
    path = tmp_path / 'run.json'
    if main:
        assert json.loads(path.read_text()) == {'mIoU': 41.5, 'n': 2}
    else:
        assert not path.exists()
