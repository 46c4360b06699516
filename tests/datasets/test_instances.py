"""Instances from semantic masks (connected components), instance-id PNGs and COCO JSONs."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmcv.transforms import Compose

from mmseg_sam.datasets import (
    COCOInstanceSegDataset,
    GenerateInstances,
    LoadInstanceIdAnnotations,
    image_rng,
    masks_to_boxes,
)


def _sample(seg: np.ndarray, **extra) -> dict:
    return dict(
        gt_seg_map=np.asarray(seg, np.uint8),
        img_path='data/img/a.png',
        seg_map_path='data/ann/a.png',
        seg_fields=['gt_seg_map'],
        reduce_zero_label=False,
        **extra,
    )


def _boxes(results: dict) -> list[list[float]]:
    return results['gt_instance_bboxes'].tolist()


def _check_types(results: dict, n: int, shape: tuple[int, int]) -> None:
    masks, labels, boxes = (
        results[k] for k in ('gt_instance_masks', 'gt_instance_labels', 'gt_instance_bboxes')
    )
    assert masks.dtype == np.bool_ and masks.shape == (n, *shape)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    assert boxes.dtype == np.float32 and boxes.shape == (n, 4)
    if n:
        np.testing.assert_array_equal(boxes, masks_to_boxes(masks))


# Two 2x2 squares of class 1 touching at a corner, and a class-2 bar on the image border.
TOUCHING = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 2, 2],
    ]
)


def test_touching_instances_merge_under_8_connectivity():
    out = GenerateInstances()(_sample(TOUCHING))
    _check_types(out, 2, (6, 7))
    assert out['gt_instance_labels'].tolist() == [1, 2]
    # boxes are inclusive pixel indices: the bar on the border ends at column 6 = W - 1, row 5 = H - 1
    assert _boxes(out) == [[1, 1, 4, 4], [5, 5, 6, 5]]
    np.testing.assert_array_equal(out['gt_instance_masks'][0], TOUCHING == 1)


def test_touching_instances_split_under_4_connectivity():
    out = GenerateInstances(connectivity=4)(_sample(TOUCHING))
    _check_types(out, 3, (6, 7))
    assert out['gt_instance_labels'].tolist() == [1, 1, 2]
    assert _boxes(out) == [[1, 1, 2, 2], [3, 3, 4, 4], [5, 5, 6, 5]]
    assert out['gt_instance_masks'][0].sum() == out['gt_instance_masks'][1].sum() == 4


def test_a_single_pixel_instance_has_a_point_box():
    seg = np.zeros((4, 5))
    seg[3, 4] = 1  # the last pixel of the image
    out = GenerateInstances()(_sample(seg))
    assert _boxes(out) == [[4, 3, 4, 3]]


def test_the_ignore_label_is_in_no_instance_and_no_box():
    seg = np.array(
        [
            [1, 1, 255, 1, 0],
            [1, 1, 255, 255, 255],
            [0, 0, 0, 0, 0],
        ]
    )
    out = GenerateInstances()(_sample(seg))
    # 255 neither joins the two regions nor enters the first box
    assert out['gt_instance_labels'].tolist() == [1, 1]
    assert _boxes(out) == [[0, 0, 1, 1], [3, 0, 3, 0]]
    assert not (out['gt_instance_masks'] & (seg == 255)).any()


def test_classes_and_background():
    seg = np.array([[0, 0, 1], [2, 0, 3]])
    assert GenerateInstances()(_sample(seg))['gt_instance_labels'].tolist() == [1, 2, 3]
    assert GenerateInstances(classes=(3, 1))(_sample(seg))['gt_instance_labels'].tolist() == [1, 3]
    every = GenerateInstances(background=None)(_sample(seg))
    assert every['gt_instance_labels'].tolist() == [0, 1, 2, 3]
    assert _boxes(every)[0] == [0, 0, 1, 1]  # the background's 3 pixels, 8-connected


def test_min_area_drops_small_components():
    seg = np.zeros((5, 8))
    seg[0, 0] = 1  # 1 pixel
    seg[0, 3:5] = 1  # 2 pixels
    seg[2:4, 6:8] = 1  # 4 pixels
    out = GenerateInstances(min_area=2)(_sample(seg))
    assert _boxes(out) == [[3, 0, 4, 0], [6, 2, 7, 3]]
    assert GenerateInstances(min_area=5, on_empty='keep')(_sample(seg))['gt_instance_masks'].shape == (
        0,
        5,
        8,
    )


def _dots(n: int) -> np.ndarray:
    seg = np.zeros((3, 2 * n))
    seg[1, 0::2] = 1  # n single-pixel instances at columns 0, 2, 4, ...
    return seg


def test_max_instances_with_a_seed_is_a_fixed_draw_per_image():
    cap = GenerateInstances(max_instances=3, seed=0)
    out = cap(_sample(_dots(8)))
    assert out['gt_instance_labels'].tolist() == [1, 1, 1]
    assert [b[0] for b in _boxes(out)] == [2, 6, 10]  # kept in their order
    again = cap(_sample(_dots(8)))
    np.testing.assert_array_equal(again['gt_instance_masks'], out['gt_instance_masks'])
    # the draw depends on the image file name only: another folder gives the same, another name not
    moved = cap(_sample(_dots(8)) | dict(img_path='elsewhere/a.png'))
    assert _boxes(moved) == _boxes(out)
    other = cap(_sample(_dots(8)) | dict(img_path='data/img/b.png'))
    assert [b[0] for b in _boxes(other)] == [0, 2, 10]
    # no cap reached: every instance, nothing drawn
    assert len(GenerateInstances(max_instances=8, seed=0)(_sample(_dots(8)))['gt_instance_labels']) == 8


def test_max_instances_without_a_seed_follows_numpys_global_rng():
    cap = GenerateInstances(max_instances=3)
    np.random.seed(5)
    draws = [_boxes(cap(_sample(_dots(8)))) for _ in range(4)]
    np.random.seed(5)
    assert [_boxes(cap(_sample(_dots(8)))) for _ in range(4)] == draws
    assert len({str(d) for d in draws}) > 1  # the global stream moves on: the same image draws anew


def test_image_rng_rule():
    rng = image_rng(3, dict(img_path='/x/y/0001.jpg'))
    expected = np.random.default_rng([3, 0x29F3A42B])  # zlib.crc32(b'0001.jpg')
    assert rng.integers(0, 2**31) == expected.integers(0, 2**31)
    with pytest.raises(ValueError, match=r'seed=3 keys the random draws by the image file name'):
        image_rng(3, dict(gt_seg_map=None))


@pytest.mark.parametrize('on_empty', ['skip', 'keep', 'error'])
@pytest.mark.parametrize('seg', [np.zeros((4, 6)), np.full((4, 6), 255)], ids=['background', 'ignore'])
def test_an_image_without_instances(on_empty, seg):
    step = GenerateInstances(on_empty=on_empty)
    if on_empty == 'error':
        with pytest.raises(
            ValueError, match=r'mask data/ann/a\.png \(image data/img/a\.png\) holds no instance'
        ):
            step(_sample(seg))
    elif on_empty == 'skip':
        assert step(_sample(seg)) is None
    else:
        _check_types(step(_sample(seg)), 0, (4, 6))


def test_a_binary_0_255_png_through_load_binary_annotations(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[1:4, 1:5] = 255
    mask[6:9, 7:12] = 255
    cv2.imwrite(str(tmp_path / 'm.png'), mask)
    pipeline = Compose([dict(type='LoadBinaryAnnotations'), dict(type='GenerateInstances')])
    out = pipeline(dict(seg_map_path=str(tmp_path / 'm.png'), seg_fields=[], reduce_zero_label=False))
    assert out['gt_instance_labels'].tolist() == [1, 1]
    assert _boxes(out) == [[1, 1, 4, 3], [7, 6, 11, 8]]


def test_a_0_1_png_with_ignore_through_load_annotations(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 1:3] = 1
    mask[1:3, 3] = 255  # an ignore border on the right
    cv2.imwrite(str(tmp_path / 'm.png'), mask)
    pipeline = Compose([dict(type='LoadAnnotations'), dict(type='GenerateInstances')])
    out = pipeline(dict(seg_map_path=str(tmp_path / 'm.png'), seg_fields=[], reduce_zero_label=False))
    assert out['gt_instance_labels'].tolist() == [1]
    assert _boxes(out) == [[1, 1, 2, 2]]


def test_reduce_zero_label_needs_background_none():
    seg = np.array([[255, 0], [1, 255]])
    with pytest.raises(ValueError, match=r'reduce_zero_label=True.*GenerateInstances\(background=None\)'):
        GenerateInstances()(_sample(seg) | dict(reduce_zero_label=True))
    out = GenerateInstances(background=None)(_sample(seg) | dict(reduce_zero_label=True))
    assert out['gt_instance_labels'].tolist() == [0, 1]


@pytest.mark.parametrize(
    ('seg', 'error', 'pattern'),
    [
        (
            np.zeros((4, 4), np.float32),
            TypeError,
            r'a\.png.*gt_seg_map must be an integer \(H, W\) map, got float32',
        ),
        (np.zeros((4, 4, 3), np.uint8), TypeError, r'got uint8 \(4, 4, 3\)'),
        (None, ValueError, r'found no gt_seg_map for image data/img/a\.png: place it after LoadAnnotations'),
    ],
)
def test_bad_masks(seg, error, pattern):
    results = _sample(np.zeros((1, 1)))
    if seg is None:
        del results['gt_seg_map']
    else:
        results['gt_seg_map'] = seg
    with pytest.raises(error, match=pattern):
        GenerateInstances()(results)


@pytest.mark.parametrize(
    ('kwargs', 'pattern'),
    [
        (dict(connectivity=6), r'connectivity must be 4 or 8, got 6'),
        (dict(on_empty='drop'), r"on_empty must be one of .*got 'drop'"),
        (dict(min_area=0), r'min_area must be an int >= 1, got 0'),
        (dict(max_instances=0), r'max_instances must be an int >= 1, got 0'),
        (dict(seed=-1), r'seed must be None or a non-negative int, got -1'),
        (dict(classes=(1, 255)), r'classes \[1, 255\] include \[255\]'),
        (dict(classes=(0, 1)), r'include \[0\].*set background=None'),
        (dict(classes=()), r'classes must be a non-empty sequence'),
        (dict(background=255), r'background and ignore_index are both 255'),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        GenerateInstances(**kwargs)


# --- instance-id PNGs -------------------------------------------------------------------


def _write_pair(root: Path, seg: np.ndarray, ids: np.ndarray | None) -> dict:
    (root / 'ann').mkdir(exist_ok=True)
    cv2.imwrite(str(root / 'ann/a.png'), seg.astype(np.uint8))
    if ids is not None:
        assert cv2.imwrite(str(root / 'ann/a_instances.png'), ids)
    return dict(
        seg_map_path=str(root / 'ann/a.png'), img_path='img/a.jpg', seg_fields=[], reduce_zero_label=False
    )


ID_PIPELINE = [
    dict(type='LoadAnnotations'),
    dict(type='LoadInstanceIdAnnotations'),
    dict(type='GenerateInstances'),
]


@pytest.mark.parametrize('dtype, ids_used', [(np.uint8, (7, 3, 200)), (np.uint16, (300, 65535, 4000))])
def test_instance_id_pngs_8_and_16_bit(tmp_path, dtype, ids_used):
    a, b, c = ids_used
    seg = np.zeros((6, 8))
    ids = np.zeros((6, 8), dtype)
    seg[0:2, 0:4] = 1
    ids[0:2, 0:2], ids[0:2, 2:4] = a, b  # two touching objects of one class: two instances
    seg[4:6, 0:2] = seg[4:6, 6:8] = 2
    ids[4:6, 0:2] = ids[4:6, 6:8] = c  # one object in two pieces: one instance
    out = Compose(ID_PIPELINE)(_write_pair(tmp_path, seg, ids))
    assert out['instance_path'].endswith('ann/a_instances.png')
    # the ids travelled in gt_seg_map; GenerateInstances gave it its classes back
    assert out['gt_seg_map'].dtype == np.uint8 and 'seg_map_holds_instance_ids' not in out
    np.testing.assert_array_equal(out['gt_seg_map'], seg)
    order = sorted(ids_used)  # instances come by id
    expected = {a: ([0, 0, 1, 1], 1), b: ([2, 0, 3, 1], 1), c: ([0, 4, 7, 5], 2)}
    assert _boxes(out) == [expected[i][0] for i in order]
    assert out['gt_instance_labels'].tolist() == [expected[i][1] for i in order]
    _check_types(out, 3, (6, 8))


def test_instance_ids_skip_ignore_and_background_pixels(tmp_path):
    seg = np.array([[1, 1, 255, 0], [0, 0, 0, 0]])
    ids = np.array([[5, 5, 5, 0], [0, 0, 9, 9]], np.uint8)  # id 5 over ignore, id 9 over background only
    out = Compose(ID_PIPELINE)(_write_pair(tmp_path, seg, ids))
    assert _boxes(out) == [[0, 0, 1, 0]]
    assert out['gt_instance_labels'].tolist() == [1]


def test_an_id_over_two_classes_is_an_error_naming_the_file_and_the_id(tmp_path):
    seg = np.array([[1, 2], [0, 0]])
    ids = np.array([[4, 4], [0, 0]], np.uint8)
    with pytest.raises(
        ValueError, match=r'a_instances\.png: instance id 4 covers pixels of classes \[1, 2\]'
    ):
        Compose(ID_PIPELINE)(_write_pair(tmp_path, seg, ids))


def test_a_missing_instance_id_file_names_the_expected_path(tmp_path):
    sample = _write_pair(tmp_path, np.zeros((2, 2)), None)
    with pytest.raises(
        FileNotFoundError, match=r'ann/a_ids\.png: no instance-id map for the mask .*ann/a\.png'
    ):
        Compose([dict(type='LoadInstanceIdAnnotations', suffix='_ids.png')])(sample)


def test_bad_instance_id_files(tmp_path):
    sample = _write_pair(tmp_path, np.zeros((2, 3)), np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r'a_instances\.png: an instance-id map must be a single-channel'):
        Compose(ID_PIPELINE)(sample)
    sample = _write_pair(tmp_path, np.zeros((2, 3)), np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r'a_instances\.png: the instance ids are 3x3 \(HxW\), the mask 2x3'):
        Compose(ID_PIPELINE)(sample)
    with pytest.raises(ValueError, match=r"suffix must end in \.png .*got '_ids\.jpg'"):
        LoadInstanceIdAnnotations(suffix='_ids.jpg')


def test_instance_ids_follow_resize_and_flip(tmp_path):
    seg = np.zeros((4, 6))
    seg[0:2, 0:3] = 1
    ids = np.zeros((4, 6), np.uint16)
    ids[0:2, 0:1], ids[0:2, 1:3] = 300, 301
    pipeline = Compose(
        [
            dict(type='LoadAnnotations'),
            dict(type='LoadInstanceIdAnnotations'),
            dict(type='Resize', scale=(12, 8), keep_ratio=False),  # (W, H): twice the size
            dict(type='RandomFlip', prob=1.0, direction='horizontal'),
            dict(type='Pad', size=(14, 10), pad_val=dict(img=0, seg=255)),  # (W, H)
            dict(type='GenerateInstances'),
        ]
    )
    sample = _write_pair(tmp_path, seg, ids) | dict(img=np.zeros((4, 6, 3), np.uint8), img_shape=(4, 6))
    out = pipeline(sample)
    expected = np.full((10, 14), 255, np.uint8)  # the padding: ignore, in no instance
    expected[:8, :12] = 0
    expected[0:4, 6:12] = 1
    np.testing.assert_array_equal(out['gt_seg_map'], expected)
    # 300 covered column 0 (-> 0..1 resized -> 10..11 flipped), 301 columns 1..2 (-> 2..5 -> 6..9)
    assert _boxes(out) == [[10, 0, 11, 3], [6, 0, 9, 3]]
    _check_types(out, 2, (10, 14))


# --- COCO JSON ----------------------------------------------------------------------------


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=rle['size'], counts=rle['counts'].decode('ascii'))


def _write_coco(root: Path, annotations: list[dict] | None = None, images: list[dict] | None = None) -> str:
    (root / 'images').mkdir(exist_ok=True)
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(root / 'images' / name), np.full((8, 10, 3), 100, np.uint8))
    dog = np.zeros((8, 10), bool)
    dog[5:7, 1:4] = True
    if annotations is None:
        annotations = [
            # a rectangle polygon on pixel corners (pixel i spans [i, i + 1)): columns 2..5, rows 1..3
            dict(id=11, image_id=1, category_id=7, iscrowd=0, segmentation=[[2, 1, 6, 1, 6, 4, 2, 4]]),
            dict(id=12, image_id=1, category_id=3, iscrowd=0, segmentation=_rle(dog)),
            # uncompressed RLE, column-major: 80 pixels = the two last columns (8 rows each)
            dict(
                id=13, image_id=1, category_id=3, iscrowd=1, segmentation=dict(size=[8, 10], counts=[64, 16])
            ),
        ]
    coco = dict(
        images=images
        or [
            dict(id=1, file_name='a.png', height=8, width=10),
            dict(id=2, file_name='b.png', height=8, width=10),
        ],
        annotations=annotations,
        categories=[dict(id=7, name='cat'), dict(id=3, name='dog')],  # class 1 = cat, 2 = dog
    )
    (root / 'train.json').write_text(json.dumps(coco))
    return 'train.json'


def _coco_dataset(root: Path, pipeline: list[dict] | None = None, **kwargs) -> COCOInstanceSegDataset:
    from mmseg.registry import DATASETS

    return DATASETS.build(
        dict(
            type='COCOInstanceSegDataset',
            data_root=str(root),
            ann_file=_write_coco(root, **kwargs),
            data_prefix=dict(img_path='images'),
            pipeline=pipeline
            or [
                dict(type='LoadImageFromFile'),
                dict(type='LoadCOCOInstances'),
                dict(type='GenerateInstances', on_empty='keep'),
                dict(type='PackPromptedSegInputs'),
            ],
        )
    )


def test_coco_json_polygons_rle_and_crowd_regions(tmp_path):
    dataset = _coco_dataset(tmp_path)
    assert dataset.metainfo['classes'] == ('background', 'cat', 'dog')
    assert len(dataset) == 2 and dataset[0]['data_samples'].img_path.endswith('images/a.png')
    sample = dataset[0]['data_samples']
    seg = sample.gt_sem_seg.data[0].numpy()
    expected = np.zeros((8, 10), np.uint8)
    expected[1:4, 2:6] = 1
    expected[5:7, 1:4] = 2
    expected[:, 8:10] = 255  # the crowd region is ignored
    np.testing.assert_array_equal(seg, expected)
    instances = sample.gt_instances
    assert instances.labels.tolist() == [1, 2]
    assert instances.bboxes.tolist() == [[2, 1, 5, 3], [1, 5, 3, 6]]
    np.testing.assert_array_equal(instances.masks.numpy(), [expected == 1, expected == 2])
    empty = dataset[1]['data_samples'].gt_instances  # no annotation: kept with N = 0
    assert empty.masks.shape == (0, 8, 10) and empty.bboxes.shape == (0, 4)


def test_coco_crowd_as_an_instance_and_overlaps(tmp_path):
    big = np.zeros((8, 10), bool)
    big[0:6, 0:6] = True
    small = np.zeros((8, 10), bool)
    small[2:4, 2:4] = True
    annotations = [
        dict(id=1, image_id=1, category_id=3, iscrowd=0, segmentation=_rle(small)),
        dict(id=2, image_id=1, category_id=7, iscrowd=0, segmentation=_rle(big)),
        dict(id=3, image_id=1, category_id=3, iscrowd=1, segmentation=dict(size=[8, 10], counts=[64, 16])),
    ]
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadCOCOInstances', crowd='instance'),
        dict(type='GenerateInstances'),
        dict(type='PackPromptedSegInputs'),
    ]
    instances = _coco_dataset(tmp_path, pipeline, annotations=annotations)[0]['data_samples'].gt_instances
    # annotation order; the smaller instance on top of the larger one; the crowd an instance
    assert instances.labels.tolist() == [2, 1, 2]
    assert instances.bboxes.tolist() == [[2, 2, 3, 3], [0, 0, 5, 5], [8, 0, 9, 7]]
    assert instances.masks.sum((1, 2)).tolist() == [4, 32, 16]


@pytest.mark.parametrize(
    ('kwargs', 'error', 'pattern'),
    [
        (
            dict(annotations=[dict(id=5, image_id=9, category_id=7, segmentation=[])]),
            ValueError,
            r'train\.json: annotations refer to images missing from its "images": annotation 5 -> image_id 9',
        ),
        (
            dict(annotations=[dict(id=5, image_id=1, category_id=4, segmentation=[])]),
            ValueError,
            r'annotations with unknown category ids \(categories: \[7, 3\]\): annotation 5 -> category_id 4',
        ),
        (
            dict(images=[dict(id=1, file_name='missing.png', height=8, width=10)], annotations=[]),
            FileNotFoundError,
            r'1 of 1 images of .*train\.json are not in .*images.*: .*images/missing\.png',
        ),
    ],
)
def test_coco_json_errors_name_the_bad_entries(tmp_path, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        _coco_dataset(tmp_path, **kwargs)


def test_coco_errors_when_loading(tmp_path):
    bad_rle = [dict(id=8, image_id=1, category_id=7, iscrowd=0, segmentation=dict(size=[4, 4], counts='PP'))]
    dataset = _coco_dataset(tmp_path, annotations=bad_rle)
    with pytest.raises(
        ValueError, match=r'annotation 8: the RLE size \[4, 4\] differs from the image size \[8, 10\]'
    ):
        dataset[0]
    wrong_size = [dict(id=1, file_name='a.png', height=9, width=10)]
    polygon = [dict(id=1, image_id=1, category_id=7, iscrowd=0, segmentation=[[2, 1, 6, 1, 6, 4, 2, 4]])]
    dataset = _coco_dataset(tmp_path, annotations=polygon, images=wrong_size)
    with pytest.raises(
        ValueError, match=r'image .*a\.png \(annotations in .*train\.json\): the image is 8x10'
    ):
        dataset[0]
    with pytest.raises(ValueError, match=r'metainfo classes .* differ from those of .*train\.json'):
        COCOInstanceSegDataset(
            ann_file=_write_coco(tmp_path),
            data_root=str(tmp_path),
            metainfo=dict(classes=('background', 'dog')),
        )
    with pytest.raises(FileNotFoundError, match=r'COCO annotation file .*nothing\.json does not exist'):
        COCOInstanceSegDataset(ann_file='nothing.json', data_root=str(tmp_path))


def test_coco_annotations_loaded_after_resize_stay_at_the_original_size(tmp_path):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(20, 16), keep_ratio=False),  # mmseg's test order: annotations after Resize
        dict(type='LoadCOCOInstances'),
        dict(type='GenerateInstances'),
        dict(type='PackPromptedSegInputs'),
    ]
    packed = _coco_dataset(tmp_path, pipeline)[0]
    assert packed['inputs'].shape == (3, 16, 20)
    instances = packed['data_samples'].gt_instances
    assert instances.masks.shape == (2, 8, 10) and instances.bboxes.tolist() == [[2, 1, 5, 3], [1, 5, 3, 6]]


def test_coco_crowd_as_background(tmp_path):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadCOCOInstances', crowd='background'),
        dict(type='GenerateInstances'),
        dict(type='PackPromptedSegInputs'),
    ]
    sample = _coco_dataset(tmp_path, pipeline)[0]['data_samples']
    assert sample.gt_instances.labels.tolist() == [1, 2]
    assert (sample.gt_sem_seg.data[0, :, 8:] == 0).all()  # the crowd region stays background
    with pytest.raises(ValueError, match=r"crowd must be one of \('ignore', 'instance', 'background'\)"):
        Compose([dict(type='LoadCOCOInstances', crowd='skip')])


def test_instance_ids_need_the_class_map_loaded_first(tmp_path):
    sample = _write_pair(tmp_path, np.zeros((2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(
        ValueError,
        match=r'a_instances\.png: LoadInstanceIdAnnotations needs the class map .*loaded just before it',
    ):
        Compose([dict(type='LoadInstanceIdAnnotations')])(sample)


def test_a_palette_png_of_instance_ids_is_read_as_its_indices(tmp_path):
    """Pascal VOC's SegmentationObject layout: index i is object i, 255 the boundary (no instance)."""
    from PIL import Image

    seg = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [255, 255, 255, 255]])
    ids = np.array([[1, 1, 0, 2], [1, 255, 0, 2], [255, 255, 255, 255]], np.uint8)
    sample = _write_pair(tmp_path, seg, None)
    palette = Image.fromarray(ids, mode='P')
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192])  # VOC's colours
    palette.save(tmp_path / 'ann/a_instances.png')
    out = Compose(ID_PIPELINE)(sample)
    assert out['gt_instance_labels'].tolist() == [1, 2]
    assert _boxes(out) == [[0, 0, 1, 1], [3, 0, 3, 1]]
    assert out['gt_instance_masks'][0].sum() == 3  # the boundary pixel inside object 1 is in no instance


# --- the frame of the instances ------------------------------------------------------------


def _image_and_mask(root: Path) -> dict:
    """An 8x12 image and a mask with one class-1 object in its left half (a flip moves it)."""
    seg = np.zeros((8, 12), np.uint8)
    seg[1:5, 1:4] = 1
    cv2.imwrite(str(root / 'a.png'), np.full((8, 12, 3), 90, np.uint8))
    cv2.imwrite(str(root / 'a_mask.png'), seg)
    return dict(img_path=str(root / 'a.png'), seg_map_path=str(root / 'a_mask.png'), seg_fields=[],
                reduce_zero_label=False)  # fmt: skip


@pytest.mark.parametrize(
    ('step', 'changed'),
    [
        (dict(type='RandomFlip', prob=1.0), r'gt_seg_map changed \(its values\); flip None -> True; '
         r"flip_direction None -> 'horizontal'"),
        (dict(type='RandomFlip', prob=0.0), r'flip None -> False'),  # no flip drawn: refused all the same
        (dict(type='RandomRotate', prob=1.0, degree=(90, 90)), r'gt_seg_map changed \(its values\)'),
        (dict(type='Resize', scale=(24, 16), keep_ratio=False), r'gt_instance_masks \(1, 8, 12\) are not in the '
         r'frame of gt_seg_map \(16, 24\)'),
        (dict(type='RandomCrop', crop_size=(6, 6)), r'are not in the frame of gt_seg_map \(6, 6\)'),
    ],
    ids=['flip', 'flip-drawn-none', 'rotate', 'resize', 'crop'],
)  # fmt: skip
def test_a_geometric_step_after_generate_instances_is_refused(tmp_path, step, changed):
    pipeline = Compose(
        [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='GenerateInstances'),
            dict(type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0),
            step,
            dict(type='PackPromptedSegInputs'),
        ]
    )
    with pytest.raises(
        ValueError, match=rf'(?s)mask .*a_mask\.png \(image .*a\.png\): .*{changed}.*GenerateInstances'
    ):
        pipeline(_image_and_mask(tmp_path))


def test_a_flip_before_generate_instances_moves_the_instances(tmp_path):
    pipeline = Compose(
        [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='RandomFlip', prob=1.0),
            dict(type='GenerateInstances'),
            dict(type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0),
            dict(type='PhotoMetricDistortion'),  # photometric steps after it are fine
            dict(type='PackPromptedSegInputs'),
        ]
    )
    instances = pipeline(_image_and_mask(tmp_path))['data_samples'].gt_instances
    assert instances.bboxes.tolist() == [[8, 1, 10, 4]]  # columns 1..3 of 12, mirrored
    assert instances.prompt_boxes.tolist() == [[8, 1, 10, 4]]


# --- through tools/train.py ------------------------------------------------------------------


def _train_with_pipeline(tmp_path: Path, sam_checkpoint: Path, steps: str) -> None:
    """tools/train.py, one iteration of the tiny prompted config on synthetic data, with ``steps`` between
    LoadAnnotations and PackPromptedSegInputs in the training pipeline."""
    from mmseg_sam.datasets import generate_synthetic_dataset
    from tests.conftest import run_tool
    from tests.tools.test_prompted_tools import prompted_config

    root = tmp_path / 'data'
    generate_synthetic_dataset(root, num_train=2, num_val=1, img_size=(64, 80), mode='binary', seed=0)
    base = prompted_config(tmp_path / 'base.py', root, sam_checkpoint, dict(peft=None), {})
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = [{str(base)!r}]
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), {steps},
    dict(type='PackPromptedSegInputs')]))
""")
    run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'work')


@pytest.mark.slow
def test_tools_train_stops_on_a_flip_after_generate_instances(tmp_path, sam_checkpoint):
    steps = """dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='GenerateInstances'),
    dict(type='SamplePrompts', box_jitter='none', num_pos_points=1), dict(type='RandomFlip', prob=1.0)"""
    with pytest.raises(
        ValueError,
        match=r'(?s)image .*img_dir/train/\d+\.png.*a pipeline step after GenerateInstances moved the image and '
        r'gt_seg_map but not the instance masks.*flip None -> True.*put GenerateInstances \(and SamplePrompts\) '
        r'after every transform',
    ):
        _train_with_pipeline(tmp_path, sam_checkpoint, steps)
    assert not list((tmp_path / 'work').glob('iter_*.pth'))


@pytest.mark.slow
def test_tools_train_names_min_area_when_no_image_has_an_instance(tmp_path, sam_checkpoint):
    steps = """dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='GenerateInstances', min_area=100000, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='none', num_pos_points=1)"""
    with pytest.raises(
        ValueError,
        match=r'(?s)the pipeline dropped \(returned None for\) 1001 samples in a row, 2 distinct images of 2 '
        r"\(.*img_dir/train/.*GenerateInstances\(on_empty='skip'\) drops every image without an instance of at "
        r'least min_area=100000 pixels.*Lower min_area',
    ):
        _train_with_pipeline(tmp_path, sam_checkpoint, steps)
