"""tools/infer.py, mmseg_sam.apis, mmseg's own MMSegInferencer, and tools/test.py --show-dir overlays.

One short training run (tiny SAM, Conv-LoRA, binary, 4 iterations) is shared by the
session (tests/tools/test_plot_curves.py uses its logs); the multi-class model is
built in-process with perturbed weights.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.apis import MMSegInferencer
from mmseg.registry import MODELS
from PIL import Image

from mmseg_sam.apis import SAMSegInferencer, init_model, list_images, resolve_dataset_meta
from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.engine.hooks import SAMCheckpointHook
from tests.conftest import REPO, TINY_ARCH, TINY_HEAD, TINY_IMG, load_tool
from tests.tools.sam2_tool_configs import sam2_trained

BINARY_BASE = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
MULTICLASS_BASE = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py'
MULTICLASS_PALETTE = [[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255]]  # the multiclass config's

tool = load_tool('tools/infer.py', 'infer_tool')


def write_tiny_config(path: Path, base: Path, data_root: Path, sam_checkpoint: Path, peft: dict) -> Path:
    """A demo config with the tiny SAM arch, 64x64 pipelines and a 4-iteration schedule."""
    path.write_text(f"""
_base_ = [{str(base)!r}]
data_root = {str(data_root)!r}
model = dict(
    sam_checkpoint={str(sam_checkpoint)!r},
    data_preprocessor=dict(size=({TINY_IMG}, {TINY_IMG})),
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), img_size={TINY_IMG},
                  peft=dict(_delete_=True, **{peft!r})),
    decode_head=dict(**{TINY_HEAD!r}))
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=({TINY_IMG}, {TINY_IMG}), keep_ratio=False), dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=({TINY_IMG}, {TINY_IMG}), keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=2)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=4, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
""")
    return path


def run_tool(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


_TRAINED: dict[str, SimpleNamespace] = {}  # one run per session, whichever module imports the fixture


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, sam_checkpoint) -> SimpleNamespace:
    """tools/train.py for 4 iterations (validation at 2 and 4) of a tiny binary Conv-LoRA model."""
    if 'binary' not in _TRAINED:
        root = tmp_path_factory.mktemp('trained_run')
        data = root / 'data'
        generate_synthetic_dataset(data, num_train=4, num_val=2, img_size=(48, 72), mode='binary')
        peft = dict(type='ConvLoRA', rank=4, num_experts=2)
        cfg = write_tiny_config(root / 'binary_convlora.py', BINARY_BASE, data, sam_checkpoint, peft)
        work = root / 'work'
        run_tool([str(REPO / 'tools/train.py'), str(cfg), '--work-dir', str(work)], cwd=root)
        _TRAINED['binary'] = SimpleNamespace(cfg=cfg, work=work, checkpoint=work / 'iter_4.pth', data=data)
    return _TRAINED['binary']


@pytest.fixture(scope='module')
def multiclass_run(tmp_path_factory, sam_checkpoint) -> SimpleNamespace:
    """A tiny 4-class model with perturbed weights, saved trainable-only without dataset_meta."""
    root = tmp_path_factory.mktemp('multiclass')
    data = root / 'data'
    generate_synthetic_dataset(data, num_train=1, num_val=2, img_size=(40, 56), mode='multiclass')
    cfg = write_tiny_config(
        root / 'multiclass.py', MULTICLASS_BASE, data, sam_checkpoint, dict(type='LoRA', rank=2)
    )
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(cfg).model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    checkpoint = {'state_dict': dict(model.state_dict()), 'meta': {}}
    SAMCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model), checkpoint)
    torch.save(checkpoint, root / 'multiclass.pth')
    return SimpleNamespace(cfg=cfg, checkpoint=root / 'multiclass.pth', data=data)


@pytest.fixture
def images(tmp_path) -> dict[str, tuple[int, int]]:
    """Non-square images of different sizes (and a non-image file) in one folder."""
    folder = tmp_path / 'images'
    folder.mkdir()
    sizes = {'wide.png': (50, 90), 'tall.jpg': (70, 40), 'square.png': (64, 64)}
    rng = np.random.default_rng(0)
    for name, (h, w) in sizes.items():
        cv2.imwrite(
            str(folder / name), cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
        )
    (folder / 'notes.txt').write_text('not an image')
    return {str(folder / name): size for name, size in sizes.items()}


@pytest.mark.slow
def test_infer_writes_masks_and_overlays_at_each_image_size(trained_run, images, tmp_path):
    folder, out = str(Path(next(iter(images))).parent), tmp_path / 'out'
    argv = [str(trained_run.cfg), str(trained_run.checkpoint), folder, '--out-dir', str(out)]
    assert tool.main([*argv, '--batch-size', '2', '--device', 'cpu']) == 0

    # mmseg's own inferencer works with the config and the trainable-only checkpoint,
    # and predicts what the tool wrote.
    reference = MMSegInferencer(model=str(trained_run.cfg), weights=str(trained_run.checkpoint), device='cpu')
    expected = reference(sorted(images), return_datasamples=True, batch_size=1)
    for path, pred in zip(sorted(images), expected):
        name = f'{Path(path).stem}.png'
        mask = np.array(Image.open(out / 'masks' / name))
        assert mask.dtype == np.uint8 and mask.shape == images[path]
        assert set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask, pred.pred_sem_seg.data[0].numpy())
        overlay = Image.open(out / 'overlays' / name)
        assert overlay.mode == 'RGB' and overlay.size[::-1] == images[path]
    assert sorted(p.name for p in (out / 'masks').iterdir()) == ['square.png', 'tall.png', 'wide.png']


def test_overlays_use_the_dataset_palette(multiclass_run, images, tmp_path):
    out = tmp_path / 'out'
    pattern = str(Path(next(iter(images))).parent / '*.png')  # a glob: wide.png and square.png
    argv = [str(multiclass_run.cfg), str(multiclass_run.checkpoint), pattern, '--out-dir', str(out)]
    assert tool.main([*argv, '--opacity', '1', '--palette-mask', '--device', 'cpu']) == 0
    assert sorted(p.name for p in (out / 'masks').iterdir()) == ['square.png', 'wide.png']
    for name in ('square.png', 'wide.png'):
        mask_png = Image.open(out / 'masks' / name)
        assert mask_png.mode == 'P'
        assert mask_png.getpalette()[:12] == [c for colour in MULTICLASS_PALETTE for c in colour]
        mask = np.array(mask_png)  # palette PNG pixels are still class indices
        assert len(np.unique(mask)) > 1 and mask.max() < 4  # a non-trivial check
        overlay = np.array(Image.open(out / 'overlays' / name).convert('RGB'))
        colours = np.array(MULTICLASS_PALETTE, dtype=np.uint8)[mask]
        np.testing.assert_array_equal(overlay, colours)  # opacity 1: the palette colour, no image

    first = sorted(images)[0]
    masks_only = tmp_path / 'masks_only'
    argv = [str(multiclass_run.cfg), str(multiclass_run.checkpoint), first, '--out-dir', str(masks_only)]
    assert tool.main([*argv, '--no-overlay', '--device', 'cpu']) == 0
    written = [p.relative_to(masks_only).as_posix() for p in masks_only.rglob('*.png')]
    assert written == [f'masks/{Path(first).stem}.png']


def test_sam_inferencer_equals_init_model_and_takes_classes_from_the_config(multiclass_run, images):
    inferencer = SAMSegInferencer(
        model=str(multiclass_run.cfg), weights=str(multiclass_run.checkpoint), device='cpu'
    )
    # the checkpoint has no dataset_meta: the config's, not mmseg's Cityscapes default
    assert inferencer.model.dataset_meta['classes'] == ['background', 'stripes', 'checker', 'dots']
    assert inferencer.model.dataset_meta['palette'] == MULTICLASS_PALETTE
    model = init_model(multiclass_run.cfg, multiclass_run.checkpoint, device='cpu')
    assert model.dataset_meta == inferencer.model.dataset_meta
    path = sorted(images)[0]
    pred = inferencer(path, return_datasamples=True)
    data = inferencer.collate_fn([inferencer.pipeline(path)])
    with torch.no_grad():
        [again] = model.test_step(data)
    torch.testing.assert_close(again.seg_logits.data, pred.seg_logits.data)


def test_checkpoint_keys_are_checked(multiclass_run, tmp_path):
    checkpoint = torch.load(multiclass_run.checkpoint, weights_only=True)
    checkpoint['state_dict']['backbone.blocks.0.attn.qkv.lora_A.z.weight'] = torch.zeros(2, 32)
    torch.save(checkpoint, tmp_path / 'extra.pth')
    with pytest.raises(
        ValueError, match=r'unexpected keys \(1\): backbone.blocks.0.attn.qkv.lora_A.z.weight'
    ):
        SAMSegInferencer(model=str(multiclass_run.cfg), weights=str(tmp_path / 'extra.pth'), device='cpu')
    with pytest.raises(ValueError, match='unexpected keys'):
        init_model(multiclass_run.cfg, tmp_path / 'extra.pth')
    # trainable-only, but the config no longer names the SAM checkpoint that supplies the rest
    with pytest.raises(
        ValueError, match=r'(?s)missing keys \(\d+\): backbone.blocks.0.attn.proj.bias.*model.sam_checkpoint'
    ):
        init_model(multiclass_run.cfg, multiclass_run.checkpoint, cfg_options={'model.sam_checkpoint': None})


def test_dataset_meta_must_fit_the_head(multiclass_run):
    model = init_model(multiclass_run.cfg, device='cpu')
    cfg = Config.fromfile(multiclass_run.cfg)
    with pytest.raises(ValueError, match=r'names 2 classes .* num_classes=4'):
        resolve_dataset_meta(
            model, cfg, {'dataset_meta': {'classes': ['a', 'b'], 'palette': [[0, 0, 0]] * 2}}
        )
    cfg.test_dataloader.dataset.metainfo = dict(classes=['a', 'b', 'c', 'd'])  # no palette: generated
    meta = resolve_dataset_meta(model, cfg)
    assert (
        meta['classes'] == ['a', 'b', 'c', 'd']
        and len(meta['palette']) == 4
        and meta['palette'][0] == [0, 0, 0]
    )


def test_list_images(images, tmp_path):
    paths = sorted(images)
    folder = Path(paths[0]).parent
    assert list_images(str(folder)) == sorted(Path(p) for p in paths)  # notes.txt skipped
    assert list_images([paths[1], str(folder / '*.png'), paths[1]]) == [
        Path(paths[1]),
        *sorted(p for p in map(Path, paths) if p.suffix == '.png' and str(p) != paths[1]),
    ]
    with pytest.raises(FileNotFoundError, match='input not found: .*missing.png'):
        list_images(str(tmp_path / 'missing.png'))
    with pytest.raises(FileNotFoundError, match=r"pattern '.*\*.bmp' matches no image"):
        list_images(str(folder / '*.bmp'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='folder .*empty holds no image'):
        list_images(tmp_path / 'empty')
    with pytest.raises(ValueError, match=r'notes.txt is not an image: expected a suffix in'):
        list_images(folder / 'notes.txt')


@pytest.mark.parametrize(
    'extra, message',
    [
        (['--opacity', '0'], r'--opacity must be in \(0, 1\], got 0.0'),
        (['--batch-size', '0'], '--batch-size must be >= 1, got 0'),
        (['--device', 'tpu'], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ],
)
def test_bad_options_are_refused(multiclass_run, images, tmp_path, capsys, extra, message):
    argv = [
        str(multiclass_run.cfg),
        str(multiclass_run.checkpoint),
        *images,
        '--out-dir',
        str(tmp_path / 'o'),
    ]
    assert tool.main([*argv, *extra]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / 'o').exists()


def test_two_inputs_with_one_output_name_are_refused(multiclass_run, images, tmp_path, capsys):
    other = tmp_path / 'other'
    other.mkdir()
    first = sorted(images)[0]
    (other / Path(first).name).write_bytes(Path(first).read_bytes())
    argv = [str(multiclass_run.cfg), str(multiclass_run.checkpoint), first, str(other)]
    assert tool.main([*argv, '--out-dir', str(tmp_path / 'o')]) == 1
    assert f'would both be written as {Path(first).stem}.png' in capsys.readouterr().err


@pytest.mark.parametrize(
    'content, message',
    [
        (b'', 'image file {} is empty (0 bytes)'),
        (b'\x89PNG\r\n', 'cannot read image file {}: neither Pillow nor'),
    ],
)
def test_an_unreadable_image_is_named_before_any_output(
    multiclass_run, images, tmp_path, capsys, content, message
):
    folder = Path(next(iter(images))).parent
    (folder / 'zz_broken.png').write_bytes(content)  # sorted last: found after the others would be written
    out = tmp_path / 'out'
    argv = [str(multiclass_run.cfg), str(multiclass_run.checkpoint), str(folder), '--out-dir', str(out)]
    assert tool.main([*argv, '--device', 'cpu']) == 1
    assert message.format(folder / 'zz_broken.png') in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['binary', 'multiclass'])
def test_test_tool_show_dir_draws_every_image(trained_run, multiclass_run, tmp_path, kind):
    """tools/test.py --show-dir: one drawing per image, GT | prediction, each at the image's size."""
    run = trained_run if kind == 'binary' else multiclass_run
    show = tmp_path / 'show'
    args = [str(run.cfg), str(run.checkpoint), '--work-dir', str(tmp_path / 'test'), '--show-dir', str(show)]
    run_tool([str(REPO / 'tools/test.py'), *args], cwd=tmp_path)
    # the test metrics' JSON comes from MainProcessLoggerHook, which tools/test.py swaps in
    [metrics_json] = (tmp_path / 'test').glob('*/2*.json')
    assert 'mIoU' in json.loads(metrics_json.read_text())
    assert "type='MainProcessLoggerHook'" in next((tmp_path / 'test').glob('*.py')).read_text()
    val_images = sorted((run.data / 'img_dir/val').glob('*.png'))
    drawings = sorted(show.rglob('*.png'))
    assert len(drawings) == len(val_images) == 2
    for image_path in val_images:
        [drawing] = [d for d in drawings if f'_{image_path.name}_' in d.name]
        with Image.open(drawing) as img:
            img.verify()
        h, w = cv2.imread(str(image_path)).shape[:2]
        drawn = np.array(Image.open(drawing).convert('RGB'))
        assert drawn.shape == (h, 2 * w, 3)  # ground truth left, prediction right
        assert drawn.std() > 0


@pytest.mark.slow
def test_inference_drops_every_step_that_needs_the_ground_truth(trained_run, tmp_path):
    """By what a step does: a user's own LoadAnnotations subclass and CheckSegSample go too."""
    from mmseg.datasets.transforms import LoadAnnotations
    from mmseg.registry import TRANSFORMS

    @TRANSFORMS.register_module(name='MyOwnMaskLoader', force=True)
    class MyOwnMaskLoader(LoadAnnotations):
        pass

    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(TINY_IMG, TINY_IMG), keep_ratio=False),
        dict(type='MyOwnMaskLoader'),
        dict(type='CheckSegSample'),
        dict(type='PackSegInputs'),
    ]
    cfg = Config.fromfile(trained_run.cfg)
    cfg.test_dataloader.dataset.pipeline = pipeline
    inferencer = SAMSegInferencer(model=cfg, weights=str(trained_run.checkpoint), device='cpu')
    steps = [type(step).__name__ for step in inferencer.pipeline.transforms]
    assert steps == ['InferenceImageLoader', 'Resize', 'PackSegInputs']
    image = np.random.default_rng(0).integers(0, 256, (30, 41, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), image)
    pred = inferencer(str(tmp_path / 'a.png'), return_datasamples=True)
    assert pred.pred_sem_seg.data.shape == (1, 30, 41)
    array_pred = inferencer(image, return_datasamples=True)  # arrays load as LoadImageFromNDArray does
    torch.testing.assert_close(array_pred.seg_logits.data, pred.seg_logits.data)


@pytest.mark.slow
def test_16_bit_images_with_the_any_depth_loader(trained_run, tmp_path):
    """Trained on LoadAnyDepthImageFromFile, infer reads 16-bit files as training did, overlays included."""
    cfg = Config.fromfile(trained_run.cfg)
    for pipeline in (cfg.test_dataloader.dataset.pipeline,):
        pipeline[0] = dict(type='LoadAnyDepthImageFromFile')
    scan = (np.random.default_rng(1).integers(0, 4096, (30, 41))).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'scan.png'), scan)
    cv2.imwrite(str(tmp_path / 'scan8.png'), np.repeat(_stretched(scan)[..., None], 3, axis=2))
    inferencer = SAMSegInferencer(model=cfg, weights=str(trained_run.checkpoint), device='cpu')
    deep = inferencer(str(tmp_path / 'scan.png'), return_datasamples=True)
    shallow = inferencer(str(tmp_path / 'scan8.png'), return_datasamples=True)
    torch.testing.assert_close(deep.seg_logits.data, shallow.seg_logits.data, atol=0.02, rtol=0)
    overlay = inferencer.read_image(str(tmp_path / 'scan.png'))
    assert overlay.dtype == np.uint8 and overlay.shape == (30, 41, 3) and overlay.max() == 255


def _stretched(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image.astype(np.float64), (1.0, 99.8))
    return np.rint(np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)


@pytest.mark.slow
def test_infer_with_a_sam2_model(tmp_path, images):
    """A SAM 2 model (tiny Hiera, LoRA, trainable-only checkpoint) through the tool and mmseg's inferencer."""
    run = sam2_trained(tmp_path, dict(type='LoRA', rank=2, targets=('q', 'v')))
    folder, out = str(Path(next(iter(images))).parent), tmp_path / 'out'
    argv = [str(run.cfg), str(run.checkpoint), folder, '--out-dir', str(out), '--device', 'cpu']
    assert tool.main([*argv, '--batch-size', '2']) == 0
    reference = MMSegInferencer(model=str(run.cfg), weights=str(run.checkpoint), device='cpu')
    expected = reference(sorted(images), return_datasamples=True, batch_size=1)
    foreground = 0
    for path, pred in zip(sorted(images), expected, strict=True):
        mask = np.array(Image.open(out / 'masks' / f'{Path(path).stem}.png'))
        assert mask.dtype == np.uint8 and mask.shape == images[path]
        np.testing.assert_array_equal(mask, pred.pred_sem_seg.data[0].numpy())
        foreground += int(mask.sum())
    assert 0 < foreground < sum(h * w for h, w in images.values())  # both classes predicted somewhere
