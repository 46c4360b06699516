"""tools/infer.py with --boxes / --points on a prompted model: masks, overlays with the prompts, scores, errors."""

import json
from pathlib import Path
from typing import Any

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
from mmseg_sam.apis.instance_outputs import read_scores, write_scores
from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import run_tool, tiny_segmentor_cfg
from tests.tools.test_prompted_tools import prompted_config

_MODEL: dict[
    str, tuple[Path, Path, list[Path]]
] = {}  # one training per session, for this module and the table


def prompted_model(root: Path, sam_checkpoint: Path) -> tuple[Path, Path, list[Path]]:
    """A prompted tiny model trained one iteration (under ``root`` the first time), its checkpoint, two 64 x 80 images."""
    if 'model' not in _MODEL:
        generate_synthetic_dataset(
            root / 'data', num_train=2, num_val=2, img_size=(64, 80), mode='binary', seed=1
        )
        cfg = prompted_config(
            root / 'cfg.py', root / 'data', sam_checkpoint, dict(peft=dict(type='BitFit')), {}
        )
        assert run_tool('tools/train.py', cfg, '--work-dir', root / 'work') is None
        images = sorted((root / 'data/img_dir/val').glob('*.png'))
        _MODEL['model'] = (cfg, root / 'work/iter_1.pth', images)
    return _MODEL['model']


def infer_argv(
    ctx: Any, *options: Any, inputs: list[Path] | None = None, scores_json: str | None = None
) -> list[Any]:
    """``tools/infer.py`` arguments for the prompted tiny model, into ``ctx.tmp / 'out'``.

    ``inputs`` defaults to the folder of the model's two images. An option value that is a
    dict or a list is written as a JSON file in ``ctx.tmp`` named after the option before
    it; a dict's keys ``'{0}'`` and ``'{1}'`` stand for the two images' file names. ``ctx``
    has ``tmp`` and ``sam`` (the bad-input table's context). ``scores_json``: the text of a
    ``scores.json`` already in the output folder.
    """
    cfg, ckpt, images = prompted_model(ctx.tmp / 'prompted_model', ctx.sam)
    if scores_json is not None:
        (ctx.tmp / 'out').mkdir()
        (ctx.tmp / 'out/scores.json').write_text(scores_json)
    argv: list[Any] = [cfg, ckpt, *(inputs or [images[0].parent]), '--out-dir', ctx.tmp / 'out']
    for k, value in enumerate(options):
        if isinstance(value, (dict, list)):
            if isinstance(value, dict):
                value = {key.format(*(p.name for p in images)): v for key, v in value.items()}
            path = ctx.tmp / f'{str(options[k - 1]).strip("-")}.json'
            path.write_text(json.dumps(value))
            value = path
        argv.append(value)
    return argv


def folder_with_an_empty_image(ctx: Any) -> list[Path]:
    """A folder of one of the model's images and ``empty.png``, a file of 0 bytes."""
    _, _, images = prompted_model(ctx.tmp / 'prompted_model', ctx.sam)
    folder = ctx.tmp / 'images'
    folder.mkdir()
    (folder / images[0].name).write_bytes(images[0].read_bytes())
    (folder / 'empty.png').write_bytes(b'')
    return [folder]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, sam_checkpoint) -> tuple[Path, Path, list[Path]]:
    """A prompted tiny model trained one iteration, its checkpoint, and two 64 x 80 images."""
    return prompted_model(tmp_path_factory.mktemp('infer_prompted'), sam_checkpoint)


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
        (('--boxes', '4,6,90,50'), 'box [4.0, 6.0, 90.0, 50.0] does not fit the 80x64 (WxH) image'),
        (('--boxes', '40,6,4,50'), 'expected 0 <= x0 <= x1 <= 79 and 0 <= y0 <= y1 <= 63'),
        (('--points', '10,70'), 'point (10.0, 70.0) is outside the 80x64 (WxH) image'),
        (('--points', '10,20,2'), "--points '10,20,2': point label 2.0 must be 1"),
        (('--boxes', '4,6,40'), "--boxes '4,6,40' is neither a JSON file nor x0,y0,x1,y1"),
        (('--boxes', 'missing.json'), '--boxes file not found: missing.json'),
        (
            ('--boxes', '1,1,9,9', '2,2,8,8', '--points', '5,5'),
            '2 boxes (--boxes) and 1 point lists (--points)',
        ),
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
    assert 'names 1 image(s) that are not among the 1 input images' in capsys.readouterr().err
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


def _scores(out: Path) -> dict[str, list[float]]:
    return json.loads((out / 'scores.json').read_text())


@pytest.mark.slow
def test_runs_into_one_out_dir_keep_every_images_scores(tmp_path, trained, capsys):
    cfg, ckpt, images = trained
    out = tmp_path / 'out'
    for path in images:  # a loop of one-image runs
        assert _infer(cfg, ckpt, [path], out, '--boxes', '4,6,40,50') == 0
    assert sorted(_scores(out)) == [p.name for p in images]
    assert sorted(p.name for p in (out / 'masks').iterdir()) == [p.name for p in images]
    first = _scores(out)[images[1].name]

    capsys.readouterr()
    assert _infer(cfg, ckpt, images[:1], out, '--boxes', '4,6,40,50', '30,10,78,60') == 0  # the first again
    said = capsys.readouterr().out
    assert f'replacing the scores and masks of 1 from an earlier run ({images[0].name}), 1 kept' in said
    scores = _scores(out)
    assert len(scores[images[0].name]) == 2 and scores[images[1].name] == first


@pytest.mark.slow
def test_a_bad_prompt_for_the_last_image_writes_nothing(tmp_path, trained, capsys):
    cfg, ckpt, images = trained
    out = tmp_path / 'out'
    assert _infer(cfg, ckpt, images[1:], out, '--boxes', '4,6,40,50') == 0  # an earlier run
    before = (out / 'scores.json').read_bytes()
    boxes = tmp_path / 'boxes.json'
    boxes.write_text(json.dumps({images[0].name: [[4, 6, 40, 50]], images[1].name: [[4, 6, 90, 50]]}))
    assert _infer(cfg, ckpt, images, out, '--boxes', str(boxes)) == 1
    err = capsys.readouterr().err
    assert f"--boxes file {boxes}, image '{images[1].name}', object 0: box [4.0, 6.0, 90.0, 50.0]" in err
    assert (out / 'scores.json').read_bytes() == before  # untouched
    assert [p.name for p in (out / 'masks').iterdir()] == [images[1].name]  # the earlier run's only


@pytest.mark.slow
def test_a_failure_midway_keeps_the_scores_of_the_images_done(tmp_path, trained, capsys):
    cfg, ckpt, images = trained
    folder = tmp_path / 'images'
    folder.mkdir()
    (folder / 'a.png').write_bytes(images[0].read_bytes())
    deep = (np.random.default_rng(0).integers(0, 4096, (64, 80))).astype(np.uint16)
    Image.fromarray(deep).save(folder / 'b_16bit.png')  # plain LoadImageFromFile refuses it when it meets it
    out = tmp_path / 'out'
    assert _infer(cfg, ckpt, [folder], out, '--boxes', '4,6,40,50') == 1
    said = capsys.readouterr()
    assert 'b_16bit.png is a 16-bit image' in said.err
    assert f'stopped after 1 of 2 images; their scores are in {out / "scores.json"}' in said.out
    assert sorted(_scores(out)) == ['a.png']


@pytest.mark.slow
def test_more_than_255_objects_give_a_16_bit_mask(tmp_path, trained, capsys):
    cfg, ckpt, images = trained
    boxes = [
        [x, y, x + w, y + h] for w, h in ((20, 16), (9, 7)) for y in range(0, 48, 3) for x in range(0, 60, 6)
    ]
    assert len(boxes) == 320
    path = tmp_path / 'boxes.json'
    path.write_text(json.dumps({images[0].name: boxes}))
    out = tmp_path / 'out'
    assert _infer(cfg, ckpt, images[:1], out, '--boxes', str(path), '--no-overlay') == 0
    assert (
        f'1 masks hold more than 255 objects and are 16-bit PNGs: {images[0].name}' in capsys.readouterr().out
    )
    png = Image.open(out / 'masks' / images[0].name)
    mask = np.array(png)
    assert png.mode.startswith('I') and mask.dtype in (np.uint16, np.int32) and mask.shape == (64, 80)
    assert mask.max() > 255 and mask.max() <= 320  # object j is j + 1, beyond what 8 bits hold
    assert len(_scores(out)[images[0].name]) == 320


@pytest.mark.slow
def test_boxes_follow_the_tight_box_convention(tmp_path, trained, capsys):
    """x1 / y1 are the last pixel indices: a one-pixel-wide box is a box, x1 = W is past the image."""
    cfg, ckpt, images = trained
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'one', '--boxes', '10,10,10,20', '0,0,79,63') == 0
    assert len(_scores(tmp_path / 'one')[images[0].name]) == 2
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'past', '--boxes', '0,0,80,63') == 1
    assert 'box [0.0, 0.0, 80.0, 63.0] does not fit the 80x64 (WxH) image: expected 0 <= x0 <= x1 <= 79' in (
        capsys.readouterr().err
    )
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'past', '--points', '80,10') == 1
    assert (
        'point (80.0, 10.0) is outside the 80x64 (WxH) image: expected 0 <= x <= 79'
        in capsys.readouterr().err
    )
    assert not (tmp_path / 'past').exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    'options',
    [('--boxes', '-3,4,10,12'), ('--boxes=-3,4,10,12',), ('--boxes', '1,2,30,40', '-3,4,10,12')],
)
def test_a_box_with_a_minus_sign_is_named(tmp_path, trained, capsys, options):
    cfg, ckpt, images = trained
    assert _infer(cfg, ckpt, images[:1], tmp_path / 'out', *options) == 1
    assert 'box [-3.0, 4.0, 10.0, 12.0] does not fit the 80x64 (WxH) image: expected 0 <= x0' in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_prompts_are_checked_against_the_image_as_loaded_exif_turned(tmp_path, trained, capsys):
    """A phone photo stored 80 x 64 with EXIF orientation 6 is loaded turned, 64 wide and 80 high."""
    cfg, ckpt, _ = trained
    photo = tmp_path / 'photo.jpg'
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
        photo, exif=exif
    )
    assert _infer(cfg, ckpt, [photo], tmp_path / 'out', '--boxes', '2,3,60,75') == 0
    assert np.array(Image.open(tmp_path / 'out/masks/photo.png')).shape == (80, 64)
    assert _infer(cfg, ckpt, [photo], tmp_path / 'raw', '--boxes', '2,3,75,60') == 1
    assert 'does not fit the 64x80 (WxH) image' in capsys.readouterr().err
    assert not (tmp_path / 'raw').exists()


def test_scores_merge_by_mask_and_leave_no_temporary_file(tmp_path):
    scores = tmp_path / 'scores.json'
    scores.write_text(json.dumps({'a.png': [0.5], 'b.png': [0.6]}))
    replaced, kept = write_scores(
        scores, read_scores(scores), {'a.jpg': [0.7, 0.8]}
    )  # writes masks/a.png again
    assert (replaced, kept) == (['a.png'], 1)
    assert json.loads(scores.read_text()) == {'a.jpg': [0.7, 0.8], 'b.png': [0.6]}
    assert [p.name for p in tmp_path.iterdir()] == ['scores.json']
    scores.write_text('[0.5]')
    with pytest.raises(ValueError, match=r'scores\.json exists but is not a scores file'):
        read_scores(scores)
