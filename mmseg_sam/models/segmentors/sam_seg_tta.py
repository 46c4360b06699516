"""Test-time augmentation that merges probabilities the way mmseg_sam's metrics read them."""

from __future__ import annotations

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import SegTTAModel
from mmseg.registry import MODELS
from mmseg.utils import SampleList

__all__ = ['SAMSegTTAModel']


@MODELS.register_module()
class SAMSegTTAModel(SegTTAModel):
    """mmseg's ``SegTTAModel`` with the merged probabilities kept in ``seg_logits``.

    For each image the augmented views' probabilities are averaged and the merged
    sample gets both the prediction and ``seg_logits`` in the convention of
    ``EncoderDecoder.postprocess_result``, so the probability metrics
    (``SODMetric``, ``BERMetric``, ``BinaryIoUMetric``) score the merged map:

    - 1 channel (``out_channels=1``): the views' ``seg_logits`` already hold
      ``sigmoid(logits)``; their mean is the merged probability, thresholded at the
      head's ``threshold``. (mmseg 1.2.2's ``SegTTAModel`` applies a second sigmoid
      here, which puts every probability in [0.5, 0.73] and makes nearly every pixel
      foreground at the usual threshold 0.5, and it keeps one view's ``seg_logits``.)
    - C > 1 channels: the mean of ``softmax(seg_logits)``, argmax for the
      prediction; ``seg_logits`` holds its logarithm, whose softmax is that mean.

    The merged sample is the first view's (the un-augmented one in the usual
    ``TestTimeAug`` order), with its ground truth and meta information.
    """

    def merge_preds(self, data_samples_list: list[SampleList]) -> SampleList:
        """Merge the predictions of each image's augmented views.

        Args:
            data_samples_list: one list of augmented views' data samples per image.

        Returns:
            SampleList: one merged data sample per image.
        """
        one_channel = self.module.out_channels == 1
        merged_samples = []
        for views in data_samples_list:
            scores = torch.stack([view.seg_logits.data.float() for view in views])
            if one_channel:
                probs = scores.mean(dim=0)
                pred = (probs > self.module.decode_head.threshold).to(probs)
                merged_logits = probs
            else:
                probs = scores.softmax(dim=1).mean(dim=0)
                pred = probs.argmax(dim=0, keepdim=True)
                merged_logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
            merged = views[0]
            merged.set_data(
                {'seg_logits': PixelData(data=merged_logits), 'pred_sem_seg': PixelData(data=pred)}
            )
            merged_samples.append(merged)
        return merged_samples
