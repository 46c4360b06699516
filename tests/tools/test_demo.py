"""`make demo` in miniature: tools/demo.py trains, tests, scores and plots on its own data."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO


def run_demo(data: Path, work: Path, *options: str) -> subprocess.CompletedProcess:
    """tools/demo.py in miniature (2 iterations, 4 train / 2 val images); asserts it exited 0."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools/demo.py'),
            *options,
            '--data-root',
            str(data),
            '--work-dir',
            str(work),
        ]
        + ['--iters', '2', '--num-train', '4', '--num-val', '2'],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_demo_trains_evaluates_and_plots(tmp_path):
    data, work = tmp_path / 'data', tmp_path / 'work'
    proc = run_demo(data, work)
    scores = re.search(r'foreground IoU ([\d.]+), Dice ([\d.]+) on 2 validation images', proc.stdout)
    assert scores, proc.stdout[-2000:]
    iou, dice = map(float, scores.groups())
    assert 0 <= iou <= dice <= 1  # Dice >= IoU for any prediction

    predictions = sorted((work / 'predictions').glob('*.png'))
    assert [p.name for p in predictions] == ['00000.png', '00001.png']
    assert all(np.array(Image.open(p)).shape == (128, 128) for p in predictions)
    assert len(list((work / 'overlays').rglob('*.png'))) == 2
    curves = Image.open(work / 'curves.png')
    assert curves.format == 'PNG' and min(curves.size) > 100


@pytest.mark.slow
def test_prompted_demo_scores_zero_shot_and_fine_tuned(tmp_path):
    """`make demo DEMO_ARGS=--prompted` in miniature: the same initial weights scored before and after."""
    work = tmp_path / 'work'
    proc = run_demo(tmp_path / 'data', work, '--prompted', '--seed', '3')
    rows = dict(re.findall(r'^\s*(zero-shot|fine-tuned)\s+([\d.]+\s+[\d.]+\s+[\d.]+)$', proc.stdout, re.M))
    assert set(rows) == {'zero-shot', 'fine-tuned'}, proc.stdout[-2000:]
    before = [float(v) for v in rows['zero-shot'].split()]
    after = [float(v) for v in rows['fine-tuned'].split()]
    assert all(0 <= v <= 100 for v in before[:2] + after[:2]) and 1 <= after[2] <= 5
    assert before != after  # the fine-tuned checkpoint, not the initial weights, was scored
    assert (work / 'init.pth').is_file() and (work / 'iter_2.pth').is_file()
    [train_config] = work.glob('20*/vis_data/config.py')  # the training run's dumped config
    assert f"load_from = '{work / 'init.pth'}'" in train_config.read_text()  # trained from init.pth
    assert len(list((work / 'overlays').rglob('*.png'))) == 2
