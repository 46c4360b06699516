"""Seeded box and point prompts (SamplePrompts), packing (PackPromptedSegInputs) and a full pipeline."""

import cv2
import numpy as np
import pytest
import torch
from mmseg.registry import DATASETS
from scipy import ndimage

from mmseg_sam.datasets import GenerateInstances, PackPromptedSegInputs, SamplePrompts
from mmseg_sam.datasets.prompts import jitter_boxes


def _instances(seg: np.ndarray, img_path: str = 'data/img/a.png', **kwargs) -> dict:
    results = dict(
        gt_seg_map=np.asarray(seg, np.uint8),
        img_path=img_path,
        seg_map_path='data/ann/a.png',
        seg_fields=['gt_seg_map'],
        img=np.zeros((*np.shape(seg), 3), np.uint8),
        img_shape=np.shape(seg),
        ori_shape=np.shape(seg),
    )
    return GenerateInstances(on_empty='keep', **kwargs)(results)


def _border_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel outside the mask, the image border counting as outside."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _rectangle() -> np.ndarray:
    seg = np.zeros((100, 120))
    seg[30:60, 40:90] = 1  # tight box (40, 30, 89, 59): width 49, height 29
    return seg


# Drawn once from the generator of seed 0 and the file name 'a.png'; the comments check them by hand.
BOX_RULES = [
    ('none', {}, [40, 30, 89, 59]),
    ('shift', {}, [54, 55, 119, 79]),  # + (14, 25, 30, 20): U{0..49} on each coordinate
    ('expand', {}, [35, 20, 102, 67]),  # sides out by (5, 10, 13, 8): U{0..19} each
    ('expand', dict(max_shift=20), [34, 20, 102, 67]),  # MedSAM's bound, U{0..20}
    # Gaussian, std (4.9, 2.9, 4.9, 2.9) = 10% of the sides: noise (0.97, -0.49, 4.54, -3.84)
    ('sam', {}, [40.96704, 29.51350, 93.53651, 55.16396]),
    # uniform in +-(4.9, 2.9, 4.9, 2.9): noise (0.15, -0.56, 1.89, 2.86)
    ('sam2', {}, [40.14881, 29.43994, 90.88828, 61.86275]),
]


@pytest.mark.parametrize(('rule', 'kwargs', 'expected'), BOX_RULES, ids=[f'{r[0]}{r[1]}' for r in BOX_RULES])
def test_box_rules_with_a_seed(rule, kwargs, expected):
    out = SamplePrompts(box_jitter=rule, num_pos_points=0, seed=0, **kwargs)(_instances(_rectangle()))
    assert out['prompt_boxes'].dtype == np.float32 and out['prompt_boxes'].shape == (1, 4)
    np.testing.assert_allclose(out['prompt_boxes'][0], expected, rtol=0, atol=1e-4)
    assert 'prompt_points' not in out and 'prompt_point_labels' not in out


def test_box_rule_bounds_over_many_draws():
    rng = np.random.default_rng(0)
    tight = np.tile(np.array([[300, 300, 399, 699]], np.float32), (4000, 1))  # sides 99 x 399
    offsets = jitter_boxes(tight, 'shift', 49, rng, 2000, 2000) - tight
    assert offsets.min() == 0 and offsets.max() == 49 and (offsets == offsets.round()).all()
    offsets = jitter_boxes(tight, 'expand', 19, rng, 2000, 2000) - tight
    assert offsets[:, :2].min() == -19 and offsets[:, :2].max() == 0
    assert offsets[:, 2:].min() == 0 and offsets[:, 2:].max() == 19
    # SAM: std 10% of the side, at most 20 px: 9.9 in x, 20 (not 39.9) in y
    noise = jitter_boxes(tight, 'sam', 20, rng, 2000, 2000) - tight
    np.testing.assert_allclose(noise.std(axis=0), [9.9, 20, 9.9, 20], rtol=0.05)
    noise = jitter_boxes(tight, 'sam2', 20, rng, 2000, 2000) - tight
    assert (np.abs(noise) <= [9.9, 20, 9.9, 20]).all() and (
        np.abs(noise).max(axis=0) > [9.8, 19.9, 9.8, 19.9]
    ).all()


@pytest.mark.parametrize('rule', ['shift', 'expand', 'sam', 'sam2'])
def test_boxes_are_clipped_to_the_image(rule):
    seg = np.zeros((20, 30))
    seg[0:10, 0:10] = 1  # on the top-left corner
    seg[12:20, 25:30] = 2  # on the bottom-right corner
    for seed in range(20):
        boxes = SamplePrompts(box_jitter=rule, max_shift=5, num_pos_points=0, seed=seed)(_instances(seg))
        boxes = boxes['prompt_boxes']
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= 29).all() and (boxes[:, 1::2] <= 19).all()
        if rule == 'expand':  # moved outward past the border: exactly on it
            assert boxes[0, :2].tolist() == [0, 0] and boxes[1, 2:].tolist() == [29, 19]


def test_positive_points_keep_their_distance_from_the_boundary():
    seg = np.zeros((32, 40))
    rows, cols = np.mgrid[:32, :40]
    seg[(cols - 20) ** 2 + (rows - 16) ** 2 <= 81] = 1  # a disk of radius 9 around (x, y) = (20, 16)
    step = SamplePrompts(boxes=False, num_pos_points=4, min_border_distance=5, seed=0)
    out = step(_instances(seg))
    points, labels = out['prompt_points'], out['prompt_point_labels']
    assert points.dtype == np.float32 and points.shape == (1, 4, 2)
    assert labels.dtype == np.int64 and labels.tolist() == [[1, 1, 1, 1]]
    assert points[0].tolist() == [[20, 16], [23, 14], [22, 15], [21, 17]]
    distance = _border_distance(seg == 1)
    assert all(distance[int(y), int(x)] >= 5 for x, y in points[0])


def test_the_image_border_counts_as_the_boundary():
    out = SamplePrompts(boxes=False, num_pos_points=1, min_border_distance=3, seed=0)(
        _instances(np.ones((5, 5)))
    )
    assert out['prompt_points'].tolist() == [[[2, 2]]]  # the only pixel 3 px from the image border


def test_thin_instances_give_their_most_interior_pixels():
    seg = np.zeros((12, 20))
    seg[4:7, 2:18] = 1  # 3 px thick: the middle row is 2 px from the boundary, the rest 1 px
    seg[10, 2:18] = 2  # 1 px thick
    out = SamplePrompts(boxes=False, num_pos_points=4, min_border_distance=5, seed=0)(_instances(seg))
    bar, line = out['prompt_points']
    assert out['prompt_point_labels'].tolist() == [[1] * 4, [1] * 4]
    assert (bar[:, 1] == 5).all() and (bar[:, 0] >= 3).all() and (bar[:, 0] <= 16).all()
    assert (line[:, 1] == 10).all() and len(set(line[:, 0].tolist())) == 4
    assert out['prompt_points'].tolist() == [
        [[9, 5], [6, 5], [8, 5], [11, 5]],
        [[10, 10], [16, 10], [14, 10], [9, 10]],
    ]


def test_negative_points_lie_outside_the_instance_near_it_and_off_ignore():
    seg = np.zeros((30, 30))
    seg[10:20, 10:20] = 1
    seg[5:25, 22:25] = 255  # ignore strip right of the instance
    step = SamplePrompts(boxes=False, num_pos_points=1, num_neg_points=6, neg_margin=4, seed=0)
    out = step(_instances(seg))
    points, labels = out['prompt_points'][0], out['prompt_point_labels'][0]
    assert labels.tolist() == [1, 0, 0, 0, 0, 0, 0]
    x, y = points[0]
    assert seg[int(y), int(x)] == 1
    for x, y in points[1:]:
        assert 6 <= x <= 23 and 6 <= y <= 23  # the tight box (10, 10, 19, 19) grown by 4
        assert seg[int(y), int(x)] == 0
    assert points.tolist() == [[19, 12], [6, 15], [7, 19], [11, 20], [20, 11], [9, 19], [7, 7]]


def test_an_instance_that_cannot_supply_every_point_is_padded():
    seg = np.zeros((6, 6))
    seg[2, 2:4] = 1  # 2 pixels; with neg_margin=0 the box holds no outside pixel
    step = SamplePrompts(boxes=False, num_pos_points=3, num_neg_points=2, neg_margin=0, seed=0)
    out = step(_instances(seg))
    assert out['prompt_point_labels'].tolist() == [[1, 1, -1, -1, -1]]
    assert sorted(out['prompt_points'][0, :2].tolist()) == [[2, 2], [3, 2]]
    assert out['prompt_points'][0, 2:].tolist() == [[0, 0]] * 3


def test_no_instances_give_empty_prompts_of_the_right_shape():
    out = SamplePrompts(num_pos_points=2, num_neg_points=1, seed=0)(_instances(np.zeros((8, 8))))
    assert out['prompt_boxes'].shape == (0, 4) and out['prompt_boxes'].dtype == np.float32
    assert out['prompt_points'].shape == (0, 3, 2) and out['prompt_point_labels'].shape == (0, 3)


def test_prompts_are_reproducible_per_seed_and_image():
    seg = np.zeros((40, 50))
    seg[5:30, 5:20] = 1
    seg[10:35, 25:45] = 2
    step = SamplePrompts(box_jitter='sam', num_pos_points=2, num_neg_points=2, seed=7)

    def draw(path: str = 'data/img/a.png') -> list:
        out = step(_instances(seg, path))
        return [out[k].tolist() for k in ('prompt_boxes', 'prompt_points', 'prompt_point_labels')]

    first = draw()
    np.random.seed(123)  # the global RNG does not matter to a seeded step
    assert draw() == first
    assert draw('/another/root/img/a.png') == first  # keyed by the file name, not the folder
    assert draw('data/img/b.png') != first
    unseeded = SamplePrompts(box_jitter='sam', num_pos_points=2, num_neg_points=2)
    np.random.seed(0)
    a = unseeded(_instances(seg))['prompt_points'].tolist()
    b = unseeded(_instances(seg))['prompt_points'].tolist()
    np.random.seed(0)
    assert unseeded(_instances(seg))['prompt_points'].tolist() == a
    assert a != b


def test_bad_samples_are_named():
    with pytest.raises(
        ValueError, match=r"SamplePrompts needs \['gt_instance_masks', 'gt_instance_bboxes'\] .*a\.png"
    ):
        SamplePrompts()(dict(gt_seg_map=np.zeros((2, 2), np.uint8), img_path='a.png', seg_map_path='m/a.png'))
    results = _instances(np.ones((4, 4)))
    results['gt_instance_masks'] = results['gt_instance_masks'].astype(np.uint8)
    with pytest.raises(TypeError, match=r'gt_instance_masks must be bool \(N, H, W\), got uint8 \(1, 4, 4\)'):
        SamplePrompts()(results)


@pytest.mark.parametrize(
    ('kwargs', 'pattern'),
    [
        (
            dict(box_jitter='random'),
            r"box_jitter must be one of \('none', 'shift', 'expand', 'sam', 'sam2'\)",
        ),
        (dict(max_shift=5), r"max_shift=5 has no effect with box_jitter='none'"),
        (dict(box_jitter='shift', max_shift=2.5), r"max_shift of box_jitter='shift' must be an int >= 0"),
        (dict(box_jitter='sam', max_shift=-1), r"max_shift of box_jitter='sam' must be a number >= 0"),
        (dict(num_pos_points=-1), r'num_pos_points must be an int >= 0, got -1'),
        (dict(boxes=False, num_pos_points=0), r'draws nothing'),
        (dict(min_border_distance=-2), r'min_border_distance must be a number >= 0, got -2'),
        (dict(neg_margin=1.5), r'neg_margin must be an int >= 0, got 1.5'),
        (dict(seed='0'), r"seed must be None or a non-negative int, got '0'"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SamplePrompts(**kwargs)


# --- packing -------------------------------------------------------------------------------


def test_packing_gives_typed_instance_data():
    seg = np.zeros((10, 12))
    seg[1:4, 1:5] = 1
    seg[6:9, 7:11] = 2
    results = SamplePrompts(num_pos_points=2, num_neg_points=1, seed=0)(_instances(seg))
    packed = PackPromptedSegInputs()(results)
    sample = packed['data_samples']
    instances = sample.gt_instances
    assert len(instances) == 2
    assert instances.masks.dtype == torch.bool and instances.masks.shape == (2, 10, 12)
    assert instances.labels.dtype == torch.int64 and instances.labels.tolist() == [1, 2]
    assert instances.bboxes.dtype == torch.float32 and instances.bboxes.tolist() == [
        [1, 1, 4, 3],
        [7, 6, 10, 8],
    ]
    assert instances.prompt_boxes.dtype == torch.float32 and instances.prompt_boxes.shape == (2, 4)
    assert instances.prompt_points.dtype == torch.float32 and instances.prompt_points.shape == (2, 3, 2)
    assert instances.prompt_point_labels.dtype == torch.int64 and instances.prompt_point_labels.shape == (
        2,
        3,
    )
    np.testing.assert_array_equal(instances.prompt_points.numpy(), results['prompt_points'])
    assert sample.gt_sem_seg.data.shape == (1, 10, 12)  # PackSegInputs' own packing is kept


def test_packing_no_instances_and_no_prompts():
    instances = PackPromptedSegInputs()(_instances(np.zeros((5, 7))))['data_samples'].gt_instances
    assert (
        instances.masks.shape == (0, 5, 7)
        and instances.labels.shape == (0,)
        and instances.bboxes.shape == (0, 4)
    )
    assert set(instances.keys()) == {'masks', 'labels', 'bboxes'}


def test_packing_refuses_instances_outside_the_masks_frame():
    results = _instances(np.ones((4, 4)))
    results['gt_seg_map'] = np.ones((8, 8), np.uint8)  # as if Resize came after GenerateInstances
    with pytest.raises(ValueError, match=r'gt_instance_masks \(1, 4, 4\) are not in the frame of gt_seg_map'):
        PackPromptedSegInputs()(results)
    with pytest.raises(ValueError, match=r"PackPromptedSegInputs needs \['gt_instance_masks'"):
        PackPromptedSegInputs()(dict(img=np.zeros((2, 2, 3), np.uint8), img_path='a.png'))


# --- a full pipeline through mmseg's registry ---------------------------------------------------


def _write_dataset(root) -> None:
    for folder in ('img', 'ann'):
        (root / folder).mkdir()
    for name, offset in (('a', 0), ('b', 2)):
        seg = np.zeros((12, 16), np.uint8)
        seg[1 + offset : 5 + offset, 2:6] = 1
        seg[7:11, 9 + offset : 14] = 2
        seg[0, 15] = 255
        cv2.imwrite(str(root / 'ann' / f'{name}.png'), seg)
        cv2.imwrite(str(root / 'img' / f'{name}.png'), np.full((12, 16, 3), 50, np.uint8))


def test_a_prompted_pipeline_built_from_a_config(tmp_path):
    _write_dataset(tmp_path)
    config = dict(
        type='CheckedSegDataset',
        data_root=str(tmp_path),
        img_suffix='.png',
        data_prefix=dict(img_path='img', seg_map_path='ann'),
        metainfo=dict(classes=('background', 'a', 'b')),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='Resize', scale=(32, 24), keep_ratio=False),
            dict(type='GenerateInstances', on_empty='keep'),
            dict(type='SamplePrompts', box_jitter='expand', num_pos_points=2, num_neg_points=1, seed=0),
            dict(type='PackPromptedSegInputs'),
        ],
    )
    dataset = DATASETS.build(config)
    second_first = dataset[1]['data_samples'].gt_instances  # order does not change seeded prompts
    packed = dataset[0]
    assert packed['inputs'].shape == (3, 24, 32)
    instances = packed['data_samples'].gt_instances
    # boxes in the resized frame: class 1 rows 1..4 x cols 2..5 -> rows 2..9 x cols 4..11
    assert instances.labels.tolist() == [1, 2]
    assert instances.bboxes.tolist() == [[4, 2, 11, 9], [18, 14, 27, 21]]
    assert instances.masks.shape == (2, 24, 32) and instances.masks.sum((1, 2)).tolist() == [64, 80]
    # 'expand': sides out by U{0..19} (drawn for 'a.png', seed 0), clipped: 0 on the top-left, 23 = H - 1 at most
    assert instances.prompt_boxes.tolist() == [[0, 0, 24, 17], [5, 1, 28, 23]]
    assert instances.prompt_point_labels.tolist() == [[1, 1, 0], [1, 1, 0]]
    for mask, points in zip(instances.masks, instances.prompt_points.long()):
        assert mask[points[:2, 1], points[:2, 0]].all() and not mask[points[2, 1], points[2, 0]]
    assert DATASETS.build(config)[1]['data_samples'].gt_instances.prompt_points.tolist() == (
        second_first.prompt_points.tolist()
    )
