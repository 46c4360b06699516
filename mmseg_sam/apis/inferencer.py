"""mmseg's MMSegInferencer with mmseg_sam's strict checkpoint loading."""

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform, Compose
from mmengine.dataset import pseudo_collate
from mmengine.visualization import Visualizer
from mmseg.apis import MMSegInferencer
from mmseg.registry import TRANSFORMS
from torch import nn

from ..datasets.transforms import check_8_bit, reads_8_bit_only
from ..datasets.transforms.roles import is_annotation_step, is_image_loader
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
    The test pipeline loses every step that loads or needs the ground truth, whatever
    its name (``LoadAnnotations``, ``LoadBinaryAnnotations``, ``CheckSegSample``, a
    subclass of your own: see ``mmseg_sam.datasets.transforms.roles``), and its image
    loader reads files as in training and arrays as ``LoadImageFromNDArray`` does; a
    16-bit image met by plain ``LoadImageFromFile`` is refused, naming the file.
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

    def _init_pipeline(self, cfg: Any) -> Compose:
        steps = [step for step in cfg.test_dataloader.dataset.pipeline if not is_annotation_step(step)]
        loaders = [i for i, step in enumerate(steps) if is_image_loader(step)]
        if not loaders:
            raise ValueError(
                f'the test pipeline {[step.get("type") for step in steps]} has no image loader '
                '(LoadImageFromFile or a subclass such as LoadAnyDepthImageFromFile)'
            )
        built = [TRANSFORMS.build(step) for step in steps]
        built[loaders[0]] = InferenceImageLoader(built[loaders[0]])
        return Compose(built)

    def read_image(self, path: str) -> np.ndarray:
        """An image as the test pipeline's loader reads it, as uint8 RGB (for overlays)."""
        loader = next(step for step in self.pipeline.transforms if isinstance(step, InferenceImageLoader))
        img = loader(path)['img']
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)[..., ::-1].copy()  # BGR -> RGB


class InferenceImageLoader(BaseTransform):
    """The config's image loader for file inputs, ``LoadImageFromNDArray``'s behaviour for arrays.

    mmseg's ``InferencerLoader`` always builds plain ``LoadImageFromFile``; this keeps
    the config's loader (and its options) so that inference reads images as training did.

    Args:
        from_file: the built image loader of the test pipeline.
    """

    def __init__(self, from_file: BaseTransform) -> None:
        self.from_file = from_file
        self.checks_depth = reads_8_bit_only(from_file)

    def transform(self, results: str | np.ndarray | dict) -> dict:
        if isinstance(results, str):
            results = dict(img_path=results)
        elif isinstance(results, np.ndarray):
            results = dict(img=results)
        elif not isinstance(results, dict):
            raise TypeError(f'inputs must be image paths, arrays or dicts, got {type(results).__name__}')
        if 'img' in results:  # an array: as LoadImageFromNDArray
            img = results['img']
            results.update(img_path=None, img_shape=img.shape[:2], ori_shape=img.shape[:2])
            return results
        if self.checks_depth:
            check_8_bit(results['img_path'])
        return self.from_file(results)
