"""`make demo` in miniature: tools/demo.py trains, tests, scores and plots on its own data."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_demo_trains_evaluates_and_plots(tmp_path):
    data, work = tmp_path / 'data', tmp_path / 'work'
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools/demo.py'),
            '--data-root',
            str(data),
            '--work-dir',
            str(work),
            '--iters',
            '2',
            '--num-train',
            '4',
            '--num-val',
            '2',
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
