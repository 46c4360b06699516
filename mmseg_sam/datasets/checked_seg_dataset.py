"""BaseSegDataset that fails, naming the folder or the files, when its data cannot be used as it is."""

from __future__ import annotations

import os.path as osp
from typing import Any

from mmcv.transforms import Compose
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .seeded import DrawKeyedDatasetMixin
from .transforms import CheckSegSample, check_8_bit, reads_8_bit_only
from .transforms.roles import is_annotation_step

__all__ = ['CheckedSegDataset', 'guard_pipeline']

_MAX_LISTED = 5


def guard_pipeline(pipeline: Compose) -> bool:
    """Put a shape check (``CheckSegSample()``) right after every annotation loader of a pipeline.

    The check compares each mask with its image where the sample is loaded, before a
    ``Resize`` could stretch one to fit the other. Steps inside ``TestTimeAug`` are
    guarded too; a loader already followed by a ``CheckSegSample`` is left as it is.

    Returns:
        bool: whether the pipeline loads images with a loader that reads 16-bit
        images as 8 bits (mmcv's ``LoadImageFromFile``, not
        :class:`~mmseg_sam.datasets.transforms.LoadAnyDepthImageFromFile`).
    """
    guarded, plain_loader = [], False
    for i, step in enumerate(pipeline.transforms):
        guarded.append(step)
        for sub in getattr(step, 'subroutines', ()):  # TestTimeAug: one Compose per augmentation path
            plain_loader |= guard_pipeline(sub)
        plain_loader |= reads_8_bit_only(step)
        following = pipeline.transforms[i + 1] if i + 1 < len(pipeline.transforms) else None
        if is_annotation_step(step) and not isinstance(step, CheckSegSample):
            if not isinstance(following, CheckSegSample):
                guarded.append(CheckSegSample())
    pipeline.transforms = guarded
    return plain_loader


@DATASETS.register_module()
class CheckedSegDataset(DrawKeyedDatasetMixin, BaseSegDataset):
    """:class:`~mmseg.datasets.BaseSegDataset` that checks its folders and every sample it loads.

    Use it as ``type='CheckedSegDataset'`` (with ``metainfo``) for your own
    multi-class data; the binary and benchmark datasets derive from it.

    mmseg builds a dataset from a missing or empty folder without complaint and
    then hangs (``InfiniteSampler``) or fails far from the cause. On local files
    this class raises when the dataset is built instead:

    - the image folder does not exist, or holds no file ending in ``img_suffix``;
    - an image has no mask ``<name><seg_map_suffix>`` in the mask folder;
    - an image or mask file is empty (0 bytes, e.g. an interrupted copy);

    and when a sample is loaded:

    - a mask whose size differs from its image's fails, naming both files
      (:func:`guard_pipeline` puts a ``CheckSegSample()`` after the annotation
      loader, so the config need not);
    - a 16-bit or 32-bit image met by mmcv's ``LoadImageFromFile`` (which would
      read it as a dark 8-bit image) fails, naming the file and the loader to use
      (``LoadAnyDepthImageFromFile``);
    - a sample that fails to load (a corrupt image or mask) names its image and
      mask files.

    Checks of mask *values* belong to the data pipeline; this class only checks
    that the files are there. Datasets read through a file backend
    (``backend_args`` set) skip the folder checks, but an empty list of images
    is still an error.

    Args:
        check_masks: Check that every image has a mask file; turn off for
            image-only (inference) datasets.
        **kwargs: Arguments of :class:`~mmseg.datasets.BaseSegDataset`.
    """

    def __init__(self, check_masks: bool = True, **kwargs: Any) -> None:
        self.check_masks = check_masks  # read by load_data_list, which BaseSegDataset.__init__ calls
        self._dropped: set[int] = set()  # indices the pipeline returned None for, in one __getitem__
        super().__init__(**kwargs)
        self._reads_8bit_only = guard_pipeline(self.pipeline)

    def _where(self) -> str:
        """``data_root``/``data_prefix`` as given, for error messages."""
        return (
            f'data_root={self.data_root!r}, data_prefix={self.data_prefix!r}, img_suffix={self.img_suffix!r}'
        )

    def load_data_list(self) -> list[dict]:
        """Load the data list like mmseg, then check it.

        Returns:
            The data list of :meth:`BaseSegDataset.load_data_list`.

        Raises:
            FileNotFoundError: If the image folder does not exist or an image
                has no mask.
            ValueError: If no image was found.
        """
        name = type(self).__name__
        img_dir = self.data_prefix.get('img_path', '') or ''
        ann_dir = self.data_prefix.get('seg_map_path', None)
        local = self.backend_args is None
        from_folder = not self.ann_file or osp.isdir(self.ann_file)
        if local and from_folder and not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{name}: the image folder {img_dir} does not exist ({self._where()}); '
                f'convert the dataset first (tools/dataset_converters/) or fix data_root'
            )
        data_list = super().load_data_list()
        if not data_list:
            source = f'the folder {img_dir}' if from_folder else f'the split file {self.ann_file}'
            raise ValueError(
                f'{name}: no image ending in {self.img_suffix!r} found in {source} ({self._where()}); '
                f'check img_suffix or convert the dataset first (tools/dataset_converters/)'
            )
        if local:
            empty = [
                path
                for d in data_list
                for path in (d['img_path'], d.get('seg_map_path'))
                if path and osp.isfile(path) and osp.getsize(path) == 0
            ]
            if empty:
                listed = ', '.join(empty[:_MAX_LISTED])
                more = f' and {len(empty) - _MAX_LISTED} more' if len(empty) > _MAX_LISTED else ''
                raise ValueError(
                    f'{name}: {len(empty)} image or mask files of {len(data_list)} samples are empty (0 bytes): '
                    f'{listed}{more}; copy them again or remove them'
                )
        if local and self.check_masks and ann_dir:
            missing = [d for d in data_list if not osp.isfile(d['seg_map_path'])]
            if missing:
                listed = ', '.join(
                    f'{d["img_path"]} (expected {d["seg_map_path"]})' for d in missing[:_MAX_LISTED]
                )
                more = f' and {len(missing) - _MAX_LISTED} more' if len(missing) > _MAX_LISTED else ''
                raise FileNotFoundError(
                    f'{name}: {len(missing)} of {len(data_list)} images in {img_dir} have no mask in '
                    f'{ann_dir} (seg_map_suffix={self.seg_map_suffix!r}): {listed}{more}'
                )
        return data_list

    def drop_hint(self) -> str:
        """What of this dataset's annotations gives no instance, for the message of :meth:`__getitem__`."""
        return ''

    def __getitem__(self, idx: int) -> Any:
        """MMEngine's ``__getitem__``; where the pipeline drops every sample it draws, an error naming why.

        In training MMEngine draws another sample when the pipeline returns None, and
        after ``max_refetch`` draws raises "Cannot find valid image ... check your image
        path", which names neither the images nor the step that dropped them.

        Raises:
            ValueError: naming the images dropped, the steps that drop samples and their
                options (``GenerateInstances``'s ``min_area``, ``classes``; COCO's crowd
                annotations).
        """
        self._dropped.clear()
        try:
            return super().__getitem__(idx)
        except Exception as error:
            if type(error) is not Exception or not str(error).startswith('Cannot find valid image'):
                raise
            steps = getattr(self.pipeline, 'transforms', ())
            rules = [rule for step in steps if (rule := getattr(step, 'drop_rule', lambda: None)())]
            cause = (
                '; '.join(rules)
                + f'. {self.drop_hint()}Lower min_area, check classes and background, or fix '
                "the annotations; GenerateInstances(on_empty='keep') keeps such images with no instance"
                if rules
                else 'a pipeline step returns None for them (mmcv: LoadImageFromFile(ignore_empty=True) on '
                'missing or empty files)'
            )
            files = [str(self.get_data_info(i)['img_path']) for i in sorted(self._dropped)[:_MAX_LISTED]]
            raise ValueError(
                f'{type(self).__name__}: the pipeline dropped (returned None for) {self.max_refetch + 1} samples '
                f'in a row, {len(self._dropped)} distinct images of {len(self)} ({", ".join(files)}'
                f'{" ..." if len(self._dropped) > _MAX_LISTED else ""}; {self._where()}): {cause}'
            ) from error

    def prepare_data(self, idx: int) -> Any:
        """Run the pipeline on sample ``idx``; a failure names the sample's files.

        mmcv and PIL report a corrupt image or mask without its path (or only
        the image's); the re-raised error keeps the original as its cause.

        Raises:
            ValueError: If the pipeline raises on this sample.
        """
        try:
            if self._reads_8bit_only and self.backend_args is None:
                check_8_bit(self.get_data_info(idx)['img_path'])
            data = super().prepare_data(idx)
            if data is None:
                self._dropped.add(idx)
            return data
        except Exception as error:
            info = self.get_data_info(idx)
            raise ValueError(
                f'{type(self).__name__}: cannot load sample {idx} (image {info.get("img_path")}, '
                f'mask {info.get("seg_map_path")}): {type(error).__name__}: {error}'
            ) from error
