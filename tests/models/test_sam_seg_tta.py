"""SAMSegTTAModel's merge and the flip tta_pipeline, by hand and through tools/test.py --tta."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import SegTTAModel
from mmseg.structures import SegDataSample

from mmseg_sam.datasets.transforms import flip_tta_pipeline
from mmseg_sam.evaluation.metrics.base_binary_metric import foreground_probability
from mmseg_sam.models.segmentors import SAMSegTTAModel


def _views(scores: list[torch.Tensor]) -> list[SegDataSample]:
    views = []
    for i, s in enumerate(scores):
        view = SegDataSample(metainfo=dict(img_path=f'view{i}.png'))
        view.seg_logits = PixelData(data=s)
        view.gt_sem_seg = PixelData(data=torch.zeros(1, *s.shape[1:], dtype=torch.long))
        views.append(view)
    return views


def _tta(model_cls, out_channels: int, threshold: float = 0.5):
    tta = model_cls.__new__(model_cls)  # merge_preds needs only the wrapped module's head settings
    torch.nn.Module.__init__(tta)
    tta.module = SimpleNamespace(out_channels=out_channels, decode_head=SimpleNamespace(threshold=threshold))
    return tta


def test_one_channel_views_average_their_probabilities():
    a = torch.tensor([[[0.9, 0.2], [0.6, 0.05]]])  # postprocess_result stores sigmoid(logits)
    b = torch.tensor([[[0.7, 0.6], [0.2, 0.05]]])
    [merged] = _tta(SAMSegTTAModel, 1).merge_preds([_views([a, b])])
    expected = (a + b) / 2
    torch.testing.assert_close(merged.seg_logits.data, expected)
    assert merged.pred_sem_seg.data.tolist() == [[[1, 0], [0, 0]]]  # 0.8, 0.4, 0.4, 0.05 at 0.5
    torch.testing.assert_close(foreground_probability(merged.seg_logits.data), expected[0].double())
    assert merged.img_path == 'view0.png' and 'gt_sem_seg' in merged
    # mmseg's own merge applies a second sigmoid: every pixel turns foreground
    [theirs] = _tta(SegTTAModel, 1).merge_preds([_views([a, b])])
    assert theirs.pred_sem_seg.data.bool().all()


def test_multi_channel_views_average_softmax_and_keep_it_readable():
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    [merged] = _tta(SAMSegTTAModel, 2).merge_preds([_views([a[0], b[0]])])
    mean = (a[0].softmax(0) + b[0].softmax(0)) / 2
    torch.testing.assert_close(merged.seg_logits.data.softmax(0), mean)
    assert torch.equal(merged.pred_sem_seg.data, mean.argmax(0, keepdim=True))
    [two] = _tta(SAMSegTTAModel, 2).merge_preds([_views([a[1, :2], b[1, :2]])])
    fg = (a[1, :2].softmax(0)[1] + b[1, :2].softmax(0)[1]) / 2
    torch.testing.assert_close(foreground_probability(two.seg_logits.data), fg.double())


def test_flip_tta_pipeline_flips_before_the_annotations():
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(64, 64), keep_ratio=False),
        dict(type='LoadBinaryAnnotations', threshold=128),
        dict(type='PackSegInputs'),
    ]
    load, tta = flip_tta_pipeline(test_pipeline)
    assert load == dict(type='LoadImageFromFile') and tta['type'] == 'TestTimeAug'
    assert [[t['type'] for t in stage] for stage in tta['transforms']] == [
        ['Resize'],
        ['RandomFlip', 'RandomFlip'],
        ['LoadBinaryAnnotations'],
        ['PackSegInputs'],
    ]
    assert [t['prob'] for t in tta['transforms'][1]] == [0.0, 1.0]
    assert test_pipeline[1] == dict(type='Resize', scale=(64, 64), keep_ratio=False)  # not modified
    with pytest.raises(
        ValueError, match=r"test pipeline \['Resize', 'PackSegInputs'\]: expected it to start"
    ):
        flip_tta_pipeline([dict(type='Resize'), dict(type='PackSegInputs')])
