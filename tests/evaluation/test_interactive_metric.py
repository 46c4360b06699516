"""InteractiveSegMetric on a hand-made case: box IoU / Dice per class, the click curve, NoC."""

import pytest
import torch

from mmseg_sam.evaluation import InteractiveSegMetric, instance_scores


def _masks(*pixel_sets, size=4) -> torch.Tensor:
    out = torch.zeros(len(pixel_sets), size, size, dtype=torch.bool)
    for i, pixels in enumerate(pixel_sets):
        for r, c in pixels:
            out[i, r, c] = True
    return out


SQUARE = [(0, 0), (0, 1), (1, 0), (1, 1)]
ROW3 = [(3, 0), (3, 1), (3, 2), (3, 3)]


def _samples() -> list[dict]:
    sem_a = torch.zeros(1, 4, 4, dtype=torch.long)
    sem_a[0, 0:2, 0:2] = 1
    sem_a[0, 3, :] = 2
    sem_a[0, 3, 3] = 255  # ignored: counts for nothing
    a = dict(
        gt_sem_seg=dict(data=sem_a),
        gt_instances=dict(masks=_masks(SQUARE, ROW3), labels=torch.tensor([1, 2])),
        pred_instances=dict(
            box_masks=_masks(
                SQUARE + [(0, 2), (1, 2)], ROW3
            ),  # IoU 4/6, then 3/3 (the ignored pixel left out)
            click_masks=torch.stack(
                [_masks(SQUARE[:2], SQUARE[:3], SQUARE), _masks(ROW3, ROW3, ROW3)]
            ),  # instance 0: IoU 0.5, 0.75, 1; instance 1: 1, 1, 1
        ),
    )
    sem_b = torch.zeros(1, 4, 4, dtype=torch.long)
    sem_b[0, 0, 0] = 1
    b = dict(
        gt_sem_seg=dict(data=sem_b),
        gt_instances=dict(masks=_masks([(0, 0)]), labels=torch.tensor([1])),
        pred_instances=dict(box_masks=_masks([]), click_masks=_masks([], [], [])[None]),  # never found
    )
    empty = torch.zeros(0, 4, 4, dtype=torch.bool)
    c = dict(
        gt_sem_seg=dict(data=torch.zeros(1, 4, 4, dtype=torch.long)),
        gt_instances=dict(masks=empty, labels=torch.zeros(0, dtype=torch.long)),
        pred_instances=dict(box_masks=empty, click_masks=torch.zeros(0, 3, 4, 4, dtype=torch.bool)),
    )
    return [a, b, c]


def test_metric_equals_the_hand_computation():
    metric = InteractiveSegMetric()
    metric.dataset_meta = dict(classes=('background', 'leaf', 'stem'))
    metric.process({}, _samples())
    out = metric.compute_metrics(metric.results)
    # box: leaf [2/3, 0] -> 1/3, stem [1] -> 1; the class mean 2/3; instances (2/3 + 1 + 0) / 3
    assert out['box_mIoU'] == pytest.approx(100 * 2 / 3)
    assert out['box_IoU.leaf'] == pytest.approx(100 / 3)
    assert out['box_IoU.stem'] == pytest.approx(100.0)
    assert out['box_IoU_instances'] == pytest.approx(100 * 5 / 9)
    assert out['box_mDice'] == pytest.approx(100 * (0.4 + 1) / 2)  # leaf Dice [0.8, 0]
    # clicks: leaf [0.5, 0], [0.75, 0], [1, 0]; stem 1 each round
    assert out['point_mIoU'] == pytest.approx(100 * (0.25 + 1) / 2)
    assert [out[f'click_mIoU@{k}'] for k in (1, 2, 3)] == pytest.approx([62.5, 68.75, 75.0])
    # NoC: 3 clicks (IoU 1 at the third), 1, and never (the cap, 3): mean 7/3
    assert out['NoC@85'] == pytest.approx(7 / 3)
    assert out['NoC@90'] == pytest.approx(7 / 3)
    assert out['instances'] == 3 and out['images_without_instances'] == 1


def test_noc_between_thresholds():
    iou, _ = instance_scores(
        _masks(SQUARE[:3], SQUARE)[None].numpy(),
        _masks(SQUARE).numpy(),
        torch.ones(4, 4, dtype=torch.bool).numpy(),
    )
    assert iou.tolist() == [[0.75, 1.0]]


def test_no_instance_anywhere_is_an_error_not_a_zero():
    metric = InteractiveSegMetric()
    metric.process({}, _samples()[2:])
    with pytest.raises(ValueError, match='none of the 1 images has an instance'):
        metric.compute_metrics(metric.results)


def test_prompt_free_predictions_are_refused():
    metric = InteractiveSegMetric()
    with pytest.raises(ValueError, match='must be a SAMPromptedEncoderDecoder'):
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.zeros(1, 4, 4)))])
    with pytest.raises(ValueError, match='noc_thresholds must lie in'):
        InteractiveSegMetric(noc_thresholds=(85,))
