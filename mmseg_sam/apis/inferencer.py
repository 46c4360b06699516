"""mmseg's MMSegInferencer with mmseg_sam's strict checkpoint loading."""

import copy
import warnings
from collections.abc import Callable
from typing import Any

from mmengine.dataset import pseudo_collate
from mmengine.visualization import Visualizer
from mmseg.apis import MMSegInferencer
from torch import nn

from .inference import load_checkpoint_to_model, resolve_dataset_meta

__all__ = ['SAMSegInferencer']


class SAMSegInferencer(MMSegInferencer):
    """``MMSegInferencer`` that checks checkpoint keys and takes classes from the config.

    mmseg's own ``MMSegInferencer(model=CONFIG, weights=CKPT)`` works with mmseg_sam
    configs (their ``custom_imports`` register the models) and trainable-only
    checkpoints (the model loads its frozen weights from ``model.sam_checkpoint`` when
    it is built), but it loads non-strictly: a checkpoint that does not fit the config
    is only warned about, and a checkpoint without ``dataset_meta`` gets Cityscapes'
    classes. This subclass raises on any key mismatch that the SAM checkpoint does not
    explain (naming the keys) and falls back to the config's dataset ``metainfo``.
    The visualizer is built without the config's ``vis_backends`` (drawings are
    written to ``out_dir``; the backends would need a ``save_dir``), and the collate
    function defaults to ``pseudo_collate`` without a registry lookup, which spares
    two warnings that plain MMSegInferencer prints.

    Arguments and calls are MMSegInferencer's::

        inferencer = SAMSegInferencer(model='configs/...py', weights='iter_1000.pth', device='cpu')
        result = inferencer('demo.png', out_dir='outputs')  # outputs/vis, outputs/pred
    """

    def _load_weights_to_model(self, model: nn.Module, checkpoint: dict[str, Any] | None, cfg: Any) -> None:
        if checkpoint is None:
            warnings.warn('no weights given: predicting with the weights the config builds', stacklevel=2)
            model.dataset_meta = resolve_dataset_meta(model, cfg)
            return
        load_checkpoint_to_model(model, checkpoint)
        model.dataset_meta = resolve_dataset_meta(model, cfg, checkpoint.get('meta', {}))

    def _init_collate(self, cfg: Any) -> Callable:
        if cfg.get('test_dataloader', {}).get('collate_fn') is None:
            return pseudo_collate
        return super()._init_collate(cfg)

    def _init_visualizer(self, cfg: Any) -> Visualizer | None:
        if 'visualizer' in cfg:
            cfg = copy.deepcopy(cfg)
            cfg.visualizer.pop('vis_backends', None)
        return super()._init_visualizer(cfg)
