"""tools/infer.py with --boxes / --points on a prompted model: masks, overlays with the prompts, scores, errors."""

import json
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from PIL import Image

from mmseg_sam.apis import load_checkpoint
from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import run_tool, tiny_segmentor_cfg
from tests.tools.test_prompted_tools import prompted_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory, sam_checkpoint) -> tuple[Path, Path, list[Path]]:
    """A prompted tiny model trained one iteration, its checkpoint, and two 64 x 80 images."""
    root = tmp_path_factory.mktemp('infer_prompted')
    generate_synthetic_dataset(
        root / 'data', num_train=2, num_val=2, img_size=(64, 80), mode='binary', seed=1
    )
    cfg = prompted_config(root / 'cfg.py', root / 'data', sam_checkpoint, dict(peft=dict(type='BitFit')), {})
    assert run_tool('tools/train.py', cfg, '--work-dir', root / 'work') is None
    images = sorted((root / 'data/img_dir/val').glob('*.png'))
    return cfg, root / 'work/iter_1.pth', images


def _infer(cfg: Path, ckpt: Path, images: list[Path], out: Path, *options: str) -> int:
    return run_tool('tools/infer.py', cfg, ckpt, *images, '--out-dir', out, *options)


@pytest.mark.slow
def test_boxes_give_the_models_masks_overlays_and_scores(tmp_path, trained):
    cfg, ckpt, images = trained
    out = tmp_path / 'out'
    assert _infer(cfg, ckpt, images, out, '--boxes', '4,6,40,50', '30,10,78,60') == 0
    scores = json.loads((out / 'scores.json').read_text())
    assert sorted(scores) == sorted(p.name for p in images) and all(len(v) == 2 for v in scores.values())
    for path in images:
        mask = np.array(Image.open(out / 'masks' / path.name))
        assert mask.shape == (64, 80) and set(np.unique(mask)) <= {0, 1, 2}
        overlay = np.array(Image.open(out / 'overlays' / path.name))
        assert overlay.shape == (64, 80, 3)
        assert not np.array_equal(overlay, np.array(Image.open(path).convert('RGB')))  # boxes drawn

    # the same box through the evaluation path (instances at the original size, prompts scaled in)
    model = MODELS.build(Config.fromfile(cfg).model).eval()
    load_checkpoint(model, ckpt)
    resized = mmcv.imresize(mmcv.imread(str(images[0])), (64, 64))  # BGR, as the test pipeline's Resize
    data = dict(inputs=[torch.from_numpy(resized).permute(2, 0, 1)], data_samples=[])
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 80), img_path=str(images[0])))
    sample.gt_instances = InstanceData(
        masks=torch.zeros(1, 64, 80, dtype=torch.bool),
        labels=torch.ones(1, dtype=torch.long),
        prompt_boxes=torch.tensor([[4.0, 6, 40, 50]]),
    )
    data['data_samples'] = [sample]
    batch = model.data_preprocessor(data, False)
    with torch.no_grad():
        [pred] = model.predict(batch['inputs'], batch['data_samples'])
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'one', '--boxes', '4,6,40,50') == 0
    written = np.array(Image.open(tmp_path / 'one/masks' / images[0].name))
    expected = pred.pred_instances.box_masks[0].numpy()
    assert 0 < expected.sum() < expected.size  # a mask, not all or nothing
    np.testing.assert_array_equal(written == 1, expected)


@pytest.mark.slow
def test_points_and_a_prompt_file(tmp_path, trained):
    cfg, ckpt, images = trained
    prompts = tmp_path / 'points.json'
    prompts.write_text(
        json.dumps({images[0].name: [[10, 12, 1], [60, 50, 0]], images[1].name: [[[5, 5]], [[70, 40]]]})
    )
    out = tmp_path / 'out'
    assert _infer(cfg, ckpt, images, out, '--points', str(prompts)) == 0
    scores = json.loads((out / 'scores.json').read_text())
    assert [len(scores[p.name]) for p in images] == [1, 2]  # one object of two points; two one-point objects


@pytest.mark.slow
@pytest.mark.parametrize(
    'options, message',
    [
        (('--boxes', '4,6,90,50'), 'box [4.0, 6.0, 90.0, 50.0] is not inside the 80x64 image'),
        (('--boxes', '40,6,4,50'), 'with x0 < x1'),
        (('--points', '10,70'), 'point (10.0, 70.0) is outside the 80x64 image'),
        (('--points', '10,20,2'), 'point label 2.0 must be 1'),
        (('--boxes', '4,6,40'), "box '4,6,40' is neither a file nor 4 numbers"),
        (('--boxes', 'missing.json'), "--boxes file not found: ['missing.json']"),
        (('--boxes', '1,1,9,9', '2,2,8,8', '--points', '5,5'), '2 boxes and 1 point lists'),
        ((), 'is a prompted model: give --boxes and / or --points'),
    ],
)
def test_bad_prompts_are_named(tmp_path, trained, capsys, options, message):
    cfg, ckpt, images = trained
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'out', *options) == 1
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_prompt_files_must_match_the_inputs(tmp_path, trained, capsys):
    cfg, ckpt, images = trained
    ghost = tmp_path / 'boxes.json'
    ghost.write_text(json.dumps({images[0].name: [[1, 1, 9, 9]], 'not_there.png': [[1, 1, 9, 9]]}))
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'out', '--boxes', str(ghost)) == 1
    assert "names ['not_there.png'], which are not among the 1 input images" in capsys.readouterr().err
    partial = tmp_path / 'partial.json'
    partial.write_text(json.dumps({images[0].name: [[1, 1, 9, 9]]}))
    assert _infer(cfg, ckpt, images, tmp_path / 'out', '--boxes', str(partial)) == 1
    assert f'no prompt for input image {images[1].name}' in capsys.readouterr().err


@pytest.mark.slow
def test_prompts_on_a_prompt_free_model_are_refused(tmp_path, trained, capsys):
    _, _, images = trained
    cfg = tmp_path / 'free.py'
    cfg.write_text(f'default_scope = "mmseg"\nmodel = {tiny_segmentor_cfg()!r}\n')
    assert _infer(cfg, tmp_path / 'any.pth', images[:1], tmp_path / 'out', '--boxes', '1,1,9,9') == 1
    assert 'builds SAMEncoderDecoder (prompt-free)' in capsys.readouterr().err
