"""Check that the model's decode head fits the dataset before any training or evaluation step."""

from typing import Any

from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch import nn

from .unwrap import unwrap_model

__all__ = ['ModelDatasetCheckHook', 'check_head_fits_dataset']


def _describe(dataset: Any) -> str:
    """The dataset's type and folders, as given in the config."""
    parts = [type(dataset).__name__]
    for attr in ('data_root', 'data_prefix', 'ann_file'):
        value = getattr(dataset, attr, None)
        if value:
            parts.append(f'{attr}={value!r}')
    return ', '.join(parts)


def _heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    heads = []
    for name in ('decode_head', 'auxiliary_head'):
        head = getattr(model, name, None)
        for i, part in enumerate(head if isinstance(head, nn.ModuleList) else [head]):
            if part is not None and hasattr(part, 'num_classes'):
                heads.append((f'{name}.{i}' if isinstance(head, nn.ModuleList) else name, part))
    return heads


def check_head_fits_dataset(model: nn.Module, dataset: Any, split: str) -> None:
    """Raise if the dataset is empty or its classes do not fit the model's heads.

    Args:
        model: the segmentor (possibly wrapped).
        dataset: the dataset of a dataloader.
        split: ``'train'``, ``'val'`` or ``'test'``, for messages.

    Raises:
        ValueError: an empty dataset (naming its folders); a head whose
            ``num_classes`` differs from the number of dataset classes, or a binary
            head (``out_channels=1``) on a dataset of more than 2 classes. A prompted
            head (one with ``predict_prompted``) takes no ``out_channels``: its
            message names ``num_classes`` only.
    """
    model = unwrap_model(model)
    if len(dataset) == 0:
        raise ValueError(f'the {split} dataset is empty ({_describe(dataset)}): no sample to {split} on')
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if classes is None:
        return
    num = len(classes)
    for name, head in _heads(model):
        # a prompted head (one entry point per prompted sample) derives its channels from num_classes alone
        prompted = callable(getattr(head, 'predict_prompted', None))
        if getattr(head, 'out_channels', None) == 1 and num > 2 and not prompted:
            raise ValueError(
                f'model.{name} has out_channels=1 (binary: one sigmoid foreground map) but the {split} dataset '
                f'has {num} classes {tuple(classes)} ({_describe(dataset)}); set out_channels={num} and '
                f'num_classes={num}'
            )
        if head.num_classes != num:
            raise ValueError(
                f'model.{name}.num_classes={head.num_classes} but the {split} dataset has {num} classes '
                f'{tuple(classes)} ({_describe(dataset)}); set model.{name}.num_classes={num} (background '
                f'included; e.g. --cfg-options model.{name}.num_classes={num}), or fix the dataset metainfo'
            )


@HOOKS.register_module()
class ModelDatasetCheckHook(Hook):
    """Fail before the first step when the model and the datasets do not fit together.

    Before training it checks the training and the validation datasets, before each
    validation / test the evaluated one (:func:`check_head_fits_dataset`): a config
    that pairs a 2-class head with a 4-class dataset fails with both numbers named,
    instead of a CUDA device-side assert mid-epoch or a silently wrong binary model.
    The checks read lengths and metainfo only.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        check_head_fits_dataset(runner.model, runner.train_dataloader.dataset, 'train')
        if runner.val_loop is not None:
            check_head_fits_dataset(runner.model, runner.val_loop.dataloader.dataset, 'val')

    def before_val(self, runner) -> None:
        check_head_fits_dataset(runner.model, runner.val_loop.dataloader.dataset, 'val')

    def before_test(self, runner) -> None:
        check_head_fits_dataset(runner.model, runner.test_loop.dataloader.dataset, 'test')
