"""The README's "Your own dataset -> Binary" config, taken from the README's own text, through
tools/train.py, tools/test.py (--out, --tta), mmseg's own tools/test.py --tta and tools/infer.py.

The data are laid out as the README says users have them: JPEG images of odd sizes and
0/255 PNG masks in images/{train,val} and masks/{train,val}. Only the architecture
(tiny SAM), the crop size (64) and the schedule (4 iterations) differ from the README.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import mmseg
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.user_data import write_configs, write_user_data

MMSEG_TEST = Path(mmseg.__file__).parent / '.mim/tools/test.py'


def run(args: list, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def masks_in(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob('*.png'))}


@pytest.fixture(scope='module')
def recipe_run(tmp_path_factory, sam_checkpoint):
    tmp = tmp_path_factory.mktemp('recipe')
    data = tmp / 'data/my_data'
    write_user_data(data, {'train': [(70, 90), (81, 64), (64, 77), (96, 70)], 'val': [(67, 93), (90, 61)]})
    cfg = write_configs(tmp, data, sam_checkpoint)
    work = tmp / 'work'
    train_log = run([REPO / 'tools/train.py', cfg, '--work-dir', work], tmp)
    return tmp, data, cfg, work, train_log


@pytest.mark.slow
def test_the_recipe_trains_with_a_thresholded_accuracy(recipe_run):
    _, _, _, work, _ = recipe_run
    assert (work / 'iter_4.pth').is_file()
    logs = [json.loads(line) for line in next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    train = [entry for entry in logs if 'decode.loss_ce' in entry]
    assert len(train) == 4 and all(0 <= entry['decode.acc_seg'] <= 100 for entry in train)
    assert any('IoU' in entry for entry in logs)  # BinaryIoUMetric ran at the end


@pytest.mark.slow
def test_test_out_and_infer_write_the_same_masks(recipe_run):
    tmp, data, cfg, work, _ = recipe_run
    out, pred = tmp / 'test_out', tmp / 'infer'
    # a threshold other than 0.5: metrics, --out and infer must all use the head's
    option = ['--cfg-options', 'model.decode_head.threshold=0.3']
    log = run(
        [REPO / 'tools/test.py', cfg, work / 'iter_4.pth', '--work-dir', tmp / 't', '--out', out, *option],
        tmp,
    )
    assert re.search(r'IoU: [\d.]+', log)
    run(
        [REPO / 'tools/infer.py', cfg, work / 'iter_4.pth', data / 'images/val', '--out-dir', pred, *option],
        tmp,
    )
    tested, inferred = masks_in(out), masks_in(pred / 'masks')
    assert sorted(tested) == sorted(inferred) == ['0000.png', '0001.png']
    for name, mask in tested.items():
        image = cv2.imread(str(data / 'images/val' / name.replace('.png', '.jpg')))
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask, inferred[name])
        probs = np.asarray(Image.open(out / 'probabilities' / name))  # round(255 * p)
        np.testing.assert_array_equal(mask, (probs >= 77).astype(np.uint8))  # p > 0.3 <=> round(255 p) >= 77


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['project', 'mmseg'])
def test_tta_and_out_through_both_test_tools(recipe_run, tool):
    tmp, data, cfg, work, _ = recipe_run
    script = REPO / 'tools/test.py' if tool == 'project' else MMSEG_TEST
    out = tmp / f'tta_out_{tool}'
    log = run(
        [script, cfg, work / 'iter_4.pth', '--work-dir', tmp / f'tta_{tool}', '--tta', '--out', out], tmp
    )
    assert re.search(r'IoU: [\d.]+', log)
    for name, mask in masks_in(out).items():
        assert mask.shape == cv2.imread(str(data / 'images/val' / name.replace('.png', '.jpg'))).shape[:2]
    assert sorted(masks_in(out)) == ['0000.png', '0001.png']


@pytest.mark.slow
@pytest.mark.parametrize('metric', ['SODMetric', 'BERMetric'])
def test_out_for_every_binary_metric(recipe_run, metric):
    tmp, data, cfg, work, _ = recipe_run
    out = tmp / f'out_{metric}'
    options = ['--cfg-options', f'test_evaluator.type={metric}']
    log = run(
        [
            REPO / 'tools/test.py',
            cfg,
            work / 'iter_4.pth',
            '--work-dir',
            tmp / metric,
            '--out',
            out,
            *options,
        ],
        tmp,
    )
    assert re.search(r'(Sm|BER): [\d.]+', log)
    assert sorted(masks_in(out)) == sorted(masks_in(out / 'probabilities')) == ['0000.png', '0001.png']


@pytest.mark.slow
def test_16_bit_images_train_and_infer_with_the_any_depth_loader(tmp_path, sam_checkpoint):
    """The recipe with LoadAnyDepthImageFromFile on 12-bit PNGs in 16-bit files."""
    data = tmp_path / 'data'
    write_user_data(data, {'train': [(70, 90), (64, 64)], 'val': [(67, 93)]})
    for path in data.glob('images/*/*.jpg'):
        cv2.imwrite(str(path.with_suffix('.png')), cv2.imread(str(path)).astype(np.uint16) * 16)
        path.unlink()
    cfg = tmp_path / 'deep.py'
    loader = "dict(type='LoadAnyDepthImageFromFile')"
    cfg.write_text(f"""_base_ = [{str(write_configs(tmp_path, data, sam_checkpoint))!r}]
_base_.train_pipeline[0] = {loader}
_base_.test_pipeline[0] = {loader}
train_dataloader = dict(dataset=dict(img_suffix='.png', pipeline=_base_.train_pipeline))
val_dataloader = dict(dataset=dict(img_suffix='.png', pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2))
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=2, by_epoch=False)]
""")
    log = run([REPO / 'tools/train.py', cfg, '--work-dir', tmp_path / 'work'], tmp_path)
    assert re.search(r'IoU: [\d.]+', log)
    run(
        [
            REPO / 'tools/infer.py',
            cfg,
            tmp_path / 'work/iter_2.pth',
            data / 'images/val',
            '--out-dir',
            tmp_path / 'pred',
        ],
        tmp_path,
    )
    assert masks_in(tmp_path / 'pred/masks')['0000.png'].shape == (67, 93)
