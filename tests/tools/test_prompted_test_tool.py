"""tools/test.py on prompted configs: --out writes every instance's masks and scores; --tta is refused by name."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import run_tool
from tests.tools.test_prompted_tools import prompted_config


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('prompted_out_data')
    generate_synthetic_dataset(root, num_train=2, num_val=2, img_size=(64, 80), mode='binary', seed=2)
    return root


@pytest.mark.slow
def test_out_writes_every_instance_of_a_prompted_model(tmp_path, data_root, sam_checkpoint):
    head = dict(test_prompting=dict(box=True, clicks=2))
    cfg = prompted_config(tmp_path / 'cfg.py', data_root, sam_checkpoint, dict(peft=None), head)
    out = tmp_path / 'out'
    run_tool('tools/test.py', cfg, 'none', '--work-dir', tmp_path / 'work', '--out', out)
    [metrics_file] = list((tmp_path / 'work').glob('*/*.json'))
    metrics = json.loads(metrics_file.read_text().splitlines()[-1])
    records = sorted(out.glob('*.json'))
    assert len(records) == 2 and len(sorted(out.glob('*.png'))) == 2
    box_iou, clicks = [], []
    for path in records:
        record = json.loads(path.read_text())
        assert record['img_path'].endswith(path.stem + '.png') or path.stem in record['img_path']
        height, width = record['size']
        for entry in record['instances']:
            assert (
                entry['label'] == 1 and 0 <= entry['box_iou'] <= 1 and isinstance(entry['box_score'], float)
            )
            mask = mask_utils.decode(dict(entry['box_mask'], counts=entry['box_mask']['counts'].encode()))
            assert mask.shape == (height, width)
            assert len(entry['click_masks']) == 2 and len(entry['click_points']) == 2
            assert set(entry['click_labels']) <= {0, 1}
            box_iou.append(entry['box_iou'])
            clicks.append(entry['click_iou'])
    assert len(box_iou) == metrics['instances']
    np.testing.assert_allclose(100 * np.mean(box_iou), metrics['box_IoU_instances'], rtol=1e-6)
    np.testing.assert_allclose(100 * np.mean(clicks, axis=0)[0], metrics['point_mIoU'], rtol=1e-6)


@pytest.mark.slow
def test_tta_is_refused_on_a_prompted_model(tmp_path, data_root, sam_checkpoint):
    cfg = prompted_config(tmp_path / 'cfg.py', data_root, sam_checkpoint, dict(peft=None), {})
    with pytest.raises(
        ValueError, match=r'--tta does not apply to SAMPromptedEncoderDecoder: its predictions'
    ):
        run_tool('tools/test.py', cfg, 'none', '--work-dir', tmp_path / 'work', '--tta')
