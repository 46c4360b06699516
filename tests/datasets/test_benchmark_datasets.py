"""Benchmark datasets and their base configs, on fake releases converted by the tools."""

from __future__ import annotations

import copy
import os.path as osp
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from mmseg_sam.datasets import BinaryForegroundDataset, LoadBinaryAnnotations
from tests.conftest import REPO
from tests.datasets.fake_releases import (
    RELEASES,
    blob,
    build_and_convert,
    load_converter,
    write_binary_mask,
    write_image,
)

BASES = REPO / 'configs/_base_/datasets'
TEST_SIZE = (64, 64)
FORBIDDEN_KEYS = {
    'model',
    'optim_wrapper',
    'param_scheduler',
    'train_cfg',
    'val_cfg',
    'test_cfg',
    'default_hooks',
}

# base config -> (train, val, test) as lists of (release, split), evaluator, number of classes
PROTOCOLS: dict[str, dict[str, Any]] = {
    'camouflage': dict(
        train=[('cod10k', 'train'), ('camo', 'train')], val=[('cod10k', 'test')], test=[('cod10k', 'test')],
        metric='SODMetric', num_classes=2,
    ),
    'polyp': dict(
        train=[('kvasir_seg', 'train'), ('cvc_clinicdb', 'train')], val=[('kvasir_seg', 'test')],
        test=[('kvasir_seg', 'test')], metric='SODMetric', num_classes=2,
    ),
    'kvasir': dict(
        train=[('kvasir_seg', 'train')], val=[('kvasir_seg', 'test')], test=[('kvasir_seg', 'test')],
        metric='SODMetric', num_classes=2,
    ),
    'cvc_clinicdb': dict(
        train=[('cvc_clinicdb', 'train')], val=[('cvc_clinicdb', 'test')], test=[('cvc_clinicdb', 'test')],
        metric='SODMetric', num_classes=2,
    ),
    'sbu': dict(train=[('sbu', 'train')], val=[('sbu', 'test')], test=[('sbu', 'test')], metric='BERMetric', num_classes=2),
    'istd': dict(train=[('istd', 'train')], val=[('istd', 'test')], test=[('istd', 'test')], metric='BERMetric', num_classes=2),
    'isic2017': dict(
        train=[('isic2017', 'train')], val=[('isic2017', 'val')], test=[('isic2017', 'test')],
        metric='BinaryIoUMetric', num_classes=2,
    ),
    'leaf_disease': dict(
        train=[('leaf_disease', 'train')], val=[('leaf_disease', 'test')], test=[('leaf_disease', 'test')],
        metric='BinaryIoUMetric', num_classes=2,
    ),
    'massachusetts_roads': dict(
        train=[('massachusetts_roads', 'train')], val=[('massachusetts_roads', 'val')],
        test=[('massachusetts_roads', 'test')], metric='BinaryIoUMetric', num_classes=2,
    ),
    'trans10k_v1': dict(
        train=[('trans10k_v1', 'train')], val=[('trans10k_v1', 'val')], test=[('trans10k_v1', 'test')],
        metric='IoUMetric', num_classes=3,
    ),
    'trans10k_v2': dict(
        train=[('trans10k_v2', 'train')], val=[('trans10k_v2', 'val')], test=[('trans10k_v2', 'test')],
        metric='IoUMetric', num_classes=12,
    ),
}  # fmt: skip


@pytest.fixture(scope='module')
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    tmp = tmp_path_factory.mktemp('releases')
    return {name: build_and_convert(name, tmp) for name in RELEASES}


def _retarget(node: Any, roots: dict[str, Path]) -> Any:
    """Copy of a config node with ``data/<name>`` roots moved to the converted fakes and Resize at 64x64."""
    if isinstance(node, dict):
        out = {k: _retarget(v, roots) for k, v in node.items()}
        if 'data_root' in out:
            out['data_root'] = str(roots[Path(out['data_root']).name])
        if out.get('type') == 'Resize':
            out['scale'] = TEST_SIZE
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(_retarget(v, roots) for v in node)
    return node


def _expected(converted, members: list[tuple[str, str]]) -> list[np.ndarray]:
    """Expected labels in dataset order (each member sorted by name, as mmseg lists files)."""
    labels = []
    for release, split in members:
        labels += [lab for _, lab in sorted(converted[release][0].labels[split].items())]
    return labels


def _build(cfg: Config, key: str, converted) -> Any:
    roots = {name: out for name, (_, out) in converted.items()}
    return DATASETS.build(_retarget(copy.deepcopy(cfg[key].to_dict()['dataset']), roots))


@pytest.mark.parametrize('base', list(PROTOCOLS))
def test_base_config_states_the_reference_data_settings(base):
    cfg = Config.fromfile(BASES / f'{base}_1024x1024.py')
    protocol = PROTOCOLS[base]
    assert not FORBIDDEN_KEYS & set(cfg.keys()), 'dataset bases define dataset keys only'
    assert cfg.crop_size == (1024, 1024)
    assert cfg.train_dataloader.batch_size == 4
    assert [t['type'] for t in cfg.train_pipeline] == [
        'LoadImageFromFile',
        'LoadAnnotations',
        'Resize',
        'RandomFlip',
        'PackSegInputs',
    ]
    for pipeline in (cfg.train_pipeline, cfg.test_pipeline):
        [resize] = [t for t in pipeline if t['type'] == 'Resize']
        assert resize == dict(type='Resize', scale=(1024, 1024), keep_ratio=False, interpolation='bicubic')
    assert [t for t in cfg.train_pipeline if t['type'] == 'RandomFlip'] == [dict(type='RandomFlip', prob=0.5)]
    assert cfg.val_evaluator['type'] == cfg.test_evaluator['type'] == protocol['metric']
    if protocol['metric'] == 'IoUMetric':
        assert cfg.val_evaluator['iou_metrics'] == ['mIoU']
    assert _data_roots(cfg) and all(Path(root).parent == Path('data') for root in _data_roots(cfg))


def _data_roots(cfg: Config) -> set[str]:
    """The ``data_root`` of every dataset the loaders build (the parts of a ConcatDataset too)."""
    roots, stack = set(), [cfg[f'{split}_dataloader']['dataset'] for split in ('train', 'val', 'test')]
    while stack:
        dataset = stack.pop()
        stack += list(dataset.get('datasets', []))
        if dataset.get('data_root'):
            roots.add(dataset['data_root'])
    return roots


@pytest.mark.parametrize('base', list(PROTOCOLS))
def test_base_config_loads_converted_data_with_class_index_labels(base, converted):
    cfg = Config.fromfile(BASES / f'{base}_1024x1024.py')
    protocol = PROTOCOLS[base]
    num_classes = protocol['num_classes']
    for key in ('train', 'val', 'test'):
        dataset = _build(cfg, f'{key}_dataloader', converted)
        expected = _expected(converted, protocol[key])
        assert len(dataset) == len(expected), f'{base} {key}'
        assert len(dataset.metainfo['classes']) == num_classes
        seen = set()
        for i in range(len(dataset)):
            item = dataset[i]
            label = item['data_samples'].gt_sem_seg.data[0].numpy()
            values = set(np.unique(label).tolist())
            assert values <= set(range(num_classes)), f'{base} {key}: labels {values}'
            seen |= values
            if key == 'train':
                assert tuple(item['inputs'].shape) == (3, *TEST_SIZE) and label.shape == TEST_SIZE
            else:  # labels are loaded after Resize: original size, exact class indices
                assert tuple(item['inputs'].shape) == (3, *TEST_SIZE)
                if not converted[protocol[key][0][0]][0].jpeg_masks:
                    np.testing.assert_array_equal(label, expected[i])
                else:
                    assert np.mean(label != expected[i]) < 0.02
        # the foreground reached the model as a class index (never as mmseg's ignored 255)
        assert seen == set().union(*(np.unique(e).tolist() for e in expected)), f'{base} {key}'


def test_converters_default_to_the_config_data_roots(capsys):
    roots = set()
    for base in PROTOCOLS:
        cfg = Config.fromfile(BASES / f'{base}_1024x1024.py')
        roots |= _data_roots(cfg)
        # alternatives a base documents in a comment (CHAMELEON as the camouflage test set)
        roots |= set(
            re.findall(
                r"^# test_dataloader = .*data_root='(data/[\w-]+)'",
                (BASES / f'{base}_1024x1024.py').read_text(),
                re.M,
            )
        )
    assert roots == {f'data/{name}' for name in RELEASES}
    for name in RELEASES:
        with pytest.raises(SystemExit):
            load_converter(name).main(['--help'])
        assert f'(default: data/{name})' in capsys.readouterr().out, name


def test_dataset_types_are_registered():
    for name in (
        'COD10KDataset', 'CAMODataset', 'CHAMELEONDataset', 'SBUDataset', 'ISTDDataset', 'KvasirSEGDataset',
        'CVCClinicDBDataset', 'ISIC2017Dataset', 'LeafDiseaseDataset', 'MassachusettsRoadsDataset',
        'Trans10KV1Dataset', 'Trans10KV2Dataset', 'BinaryForegroundDataset',
    ):  # fmt: skip
        assert DATASETS.get(name) is not None, name
    assert TRANSFORMS.get('LoadBinaryAnnotations') is LoadBinaryAnnotations


def test_empty_image_folder_fails_at_build_naming_it(tmp_path):
    (tmp_path / 'img_dir/train').mkdir(parents=True)
    (tmp_path / 'ann_dir/train').mkdir(parents=True)
    (tmp_path / 'img_dir/train/notes.txt').write_text('no images here')
    cfg = dict(
        type='COD10KDataset',
        data_root=str(tmp_path),
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
    )
    with pytest.raises(
        ValueError,
        match=f"COD10KDataset: no image ending in '.jpg' found in the folder {tmp_path}/img_dir/train",
    ):
        DATASETS.build(cfg)


def test_missing_image_folder_fails_at_build_naming_it(tmp_path):
    cfg = dict(type='SBUDataset', data_root=str(tmp_path / 'sbu'), data_prefix=dict(img_path='img_dir/train'))
    with pytest.raises(
        FileNotFoundError, match=f'SBUDataset: the image folder {tmp_path}/sbu/img_dir/train does not exist'
    ):
        DATASETS.build(cfg)


def test_missing_mask_fails_at_build_naming_the_image(converted, tmp_path):
    out = tmp_path / 'sbu'
    shutil.copytree(converted['sbu'][1], out)
    (out / 'ann_dir/train/lssd2.png').unlink()
    cfg = dict(
        type='SBUDataset',
        data_root=str(out),
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
    )
    with pytest.raises(
        FileNotFoundError, match=r'1 of 2 images in .* have no mask .*lssd2\.jpg \(expected .*lssd2\.png\)'
    ):
        DATASETS.build(cfg)
    cfg['check_masks'] = False  # image-only use, e.g. inference
    assert len(DATASETS.build(cfg)) == 2


@pytest.mark.parametrize('broken', ['mask', 'image'])
def test_corrupt_file_fails_naming_the_sample_files(converted, tmp_path, broken):
    out = tmp_path / 'sbu'
    shutil.copytree(converted['sbu'][1], out)
    path = out / ('ann_dir/train/lssd2.png' if broken == 'mask' else 'img_dir/train/lssd2.jpg')
    path.write_bytes(b'not an image')
    dataset = DATASETS.build(
        dict(
            type='SBUDataset',
            data_root=str(out),
            data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')],
        )
    )
    index = [osp.basename(dataset.get_data_info(i)['img_path']) for i in range(len(dataset))].index(
        'lssd2.jpg'
    )
    dataset[1 - index]  # the intact sample loads
    with pytest.raises(
        ValueError, match=r'SBUDataset: cannot load sample .*lssd2\.jpg, mask .*lssd2\.png\)'
    ) as info:
        dataset[index]
    assert info.value.__cause__ is not None  # the original error is kept


def test_trans10k_v1_subset_through_ann_file(converted):
    release, out = converted['trans10k_v1']
    dataset = DATASETS.build(
        dict(
            type='Trans10KV1Dataset',
            data_root=str(out),
            ann_file='splits/test_hard.txt',
            data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        )
    )
    assert sorted(Path(d['img_path']).stem for d in dataset) == release.subsets['test_hard']


@pytest.mark.parametrize('dataset_type', ['BinaryForegroundDataset', 'KvasirSEGDataset', 'Trans10KV2Dataset'])
def test_reduce_zero_label_is_refused(dataset_type, converted):
    with pytest.raises(ValueError, match='reduce_zero_label'):
        DATASETS.build(
            dict(type=dataset_type, data_root=str(converted['kvasir_seg'][1]), reduce_zero_label=True)
        )


def _custom_binary_data(root: Path, mask_suffix: str, kind: str = 'L') -> dict[str, np.ndarray]:
    """A custom dataset that was not converted: images/ + masks/ with 0/255 (or JPEG) masks."""
    labels = {}
    for name in ('a', 'b', 'c'):
        write_image(root / 'images/train' / f'{name}.jpg')
        write_binary_mask(root / 'masks/train' / f'{name}{mask_suffix}', blob(name), kind)
        labels[name] = blob(name).astype(np.uint8)
    return labels


@pytest.mark.parametrize('mask_suffix, kind', [('.png', 'L'), ('_mask.jpg', 'L'), ('.png', 'red')])
def test_binary_foreground_dataset_maps_255_to_1(tmp_path, mask_suffix, kind):
    labels = _custom_binary_data(tmp_path, mask_suffix, kind)
    dataset = BinaryForegroundDataset(
        data_root=str(tmp_path),
        data_prefix=dict(img_path='images/train', seg_map_path='masks/train'),
        seg_map_suffix=mask_suffix,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadBinaryAnnotations', threshold=128),
            dict(type='RandomFlip', prob=0.0),
            dict(type='PackSegInputs'),
        ],
    )
    assert dataset.metainfo['classes'] == ('background', 'foreground')
    for i, name in enumerate(sorted(labels)):
        label = dataset[i]['data_samples'].gt_sem_seg.data[0].numpy()
        if mask_suffix.endswith('.jpg'):
            assert set(np.unique(label)) == {0, 1} and np.mean(label != labels[name]) < 0.02
        else:
            np.testing.assert_array_equal(label, labels[name])


def test_binary_foreground_dataset_with_documented_training_pipeline(tmp_path):
    _custom_binary_data(tmp_path, '.png')
    dataset = BinaryForegroundDataset(
        data_root=str(tmp_path),
        data_prefix=dict(img_path='images/train', seg_map_path='masks/train'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadBinaryAnnotations', threshold=128),
            dict(type='Resize', scale=TEST_SIZE, keep_ratio=False, interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs'),
        ],
    )
    for i in range(len(dataset)):
        item = dataset[i]
        assert tuple(item['inputs'].shape) == (3, *TEST_SIZE)
        assert set(np.unique(item['data_samples'].gt_sem_seg.data.numpy())) == {0, 1}


def test_load_binary_annotations_refuses_0_1_masks_naming_the_file(tmp_path):
    path = tmp_path / 'already_indexed.png'
    Image.fromarray(blob('x').astype(np.uint8)).save(path)
    results = dict(seg_map_path=str(path), seg_fields=[], reduce_zero_label=False)
    with pytest.raises(ValueError, match=r'already_indexed\.png holds 0/1 class indices, values \[0, 1\]'):
        LoadBinaryAnnotations()(results)


def test_load_binary_annotations_threshold_is_checked_at_construction():
    with pytest.raises(ValueError, match=r'threshold must be an int in \[1, 255\], got 300'):
        TRANSFORMS.build(dict(type='LoadBinaryAnnotations', threshold=300))
    low = LoadBinaryAnnotations(threshold=1)  # a 0/1 mask loads with threshold 1
    assert low.threshold == 1


def test_load_binary_annotations_respects_the_threshold(tmp_path):
    path = tmp_path / 'soft.png'
    Image.fromarray(np.array([[0, 100, 200, 255]], np.uint8)).save(path)
    for threshold, expected in ((128, [0, 0, 1, 1]), (64, [0, 1, 1, 1])):
        results = LoadBinaryAnnotations(threshold, any_values=True)(  # soft values: an explicit choice
            dict(seg_map_path=str(path), seg_fields=[], reduce_zero_label=False)
        )
        np.testing.assert_array_equal(results['gt_seg_map'], [expected])
    with pytest.raises(
        ValueError, match=r'soft\.png is not a 0/255 binary mask: it holds values \[0, 100, 200, 255\]'
    ):
        LoadBinaryAnnotations()(dict(seg_map_path=str(path), seg_fields=[], reduce_zero_label=False))
