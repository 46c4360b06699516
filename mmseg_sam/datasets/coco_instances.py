"""Train and test from a COCO-style instance JSON and a folder of images."""

from __future__ import annotations

import json
import os.path as osp
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import MMLogger
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from .checked_seg_dataset import CheckedSegDataset
from .instances import ENCODED_IDS, encode_instance_ids, sample_files

__all__ = ['COCOInstanceSegDataset', 'LoadCOCOInstances', 'read_coco_json']

_MAX_LISTED = 5
#: Labels 0 .. 254 fit the uint8 mask next to the ignore label 255.
_MAX_CATEGORIES = 254
_CROWD = ('ignore', 'instance', 'background')
_EMPTY = ('error', 'drop')


def _is_empty(segmentation: list | dict) -> bool:
    """Whether a segmentation holds no pixel: no polygon point, or an RLE without a foreground run.

    CVAT and Label Studio write rectangles (boxes) as ``segmentation: []``. A compressed
    RLE (a string) counts as empty only when its string is; a malformed one is
    reported, naming it, when the sample loads.
    """
    if isinstance(segmentation, list):
        return all(isinstance(p, list) and not p for p in segmentation)
    counts = segmentation.get('counts')
    if isinstance(counts, list):  # uncompressed: background and foreground runs alternate
        return not any(counts[1::2])
    return not counts


def _has_box(ann: dict) -> bool:
    box = ann.get('bbox')
    return isinstance(box, (list, tuple)) and len(box) == 4 and box[2] > 0 and box[3] > 0


def _listed(items: Sequence[Any]) -> str:
    more = f' and {len(items) - _MAX_LISTED} more' if len(items) > _MAX_LISTED else ''
    return ', '.join(str(i) for i in items[:_MAX_LISTED]) + more


def read_coco_json(path: str) -> dict[str, Any]:
    """Read and check a COCO instance JSON.

    Checked: the keys ``images``, ``annotations``, ``categories``; unique image and
    category ids; a ``file_name`` for every image; every annotation's ``image_id``
    among the images and ``category_id`` among the categories; every
    ``segmentation`` a polygon list or an RLE dict (a missing one counts as empty:
    a box without a mask, see :class:`COCOInstanceSegDataset`).

    Args:
        path: the JSON file.

    Returns:
        The parsed JSON.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: naming the file and the offending ids, as above.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'COCO annotation file {path} does not exist (ann_file, joined with data_root)'
        )
    with open(path, encoding='utf-8') as file:
        try:
            coco = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f'{path} is not valid JSON: {error}') from error
    missing = [k for k in ('images', 'annotations', 'categories') if not isinstance(coco.get(k), list)]
    if missing:
        raise ValueError(f'{path} is not a COCO instance file: it has no list {missing}')
    for kind in ('images', 'categories'):
        counts = Counter(item.get('id') for item in coco[kind])
        duplicated = sorted((i for i, n in counts.items() if n > 1), key=str)
        if duplicated:
            raise ValueError(f'{path}: {kind} ids {_listed(duplicated)} appear more than once')
    if not coco['categories']:
        raise ValueError(f'{path} has no categories')
    if len(coco['categories']) > _MAX_CATEGORIES:
        raise ValueError(
            f'{path} has {len(coco["categories"])} categories; at most {_MAX_CATEGORIES} fit a uint8 mask '
            'beside the background (0) and the ignore label (255)'
        )
    unnamed = [image.get('id') for image in coco['images'] if not isinstance(image.get('file_name'), str)]
    if unnamed:
        raise ValueError(f'{path}: images {_listed(unnamed)} have no "file_name"')
    image_ids = {image['id'] for image in coco['images']}
    category_ids = [category['id'] for category in coco['categories']]
    no_image = [
        (a.get('id'), a.get('image_id')) for a in coco['annotations'] if a.get('image_id') not in image_ids
    ]
    if no_image:
        raise ValueError(
            f'{path}: annotations refer to images missing from its "images": '
            f'{_listed([f"annotation {a} -> image_id {i}" for a, i in no_image])}'
        )
    known = set(category_ids)
    unknown = [
        (a.get('id'), a.get('category_id')) for a in coco['annotations'] if a.get('category_id') not in known
    ]
    if unknown:
        raise ValueError(
            f'{path}: annotations with unknown category ids (categories: {category_ids}): '
            f'{_listed([f"annotation {a} -> category_id {c}" for a, c in unknown])}'
        )
    bad = [
        a.get('id') for a in coco['annotations'] if not isinstance(a.get('segmentation', []), (list, dict))
    ]
    if bad:
        raise ValueError(
            f'{path}: the "segmentation" of annotations {_listed(bad)} is neither a list of polygons nor an RLE dict'
        )
    return coco


@DATASETS.register_module()
class COCOInstanceSegDataset(CheckedSegDataset):
    """Images and a COCO instance JSON (polygons or RLE), for prompted training and testing.

    Layout::

        data_root/
          <ann_file>                 e.g. annotations/instances_train.json
          <img_path>/<file_name>     e.g. images/train/0001.jpg, file_name from the JSON

    The classes are ``('background', *category names)`` in the order of the JSON's
    ``categories``: category ``categories[i]['id']`` has class index ``i + 1``, 0 is
    the background. Each entry of the data list carries its image's annotations
    (``instances``: ``ann_id``, ``label``, ``segmentation``, ``iscrowd``), the
    image's ``height`` and ``width`` (from the JSON, or read from the image file's
    header where the JSON has none), and no mask file (``seg_map_path`` None);
    :class:`LoadCOCOInstances` turns them into the semantic mask and instance ids,
    :class:`~mmseg_sam.datasets.GenerateInstances` into instances. Images without
    annotations stay in the list (see ``GenerateInstances``'s ``on_empty``).

    What the labelling tools write, and what becomes of it:

    - crowd annotations (``iscrowd=1``; CVAT writes every brush and mask shape so, as
      uncompressed RLE) follow ``LoadCOCOInstances(crowd=...)``: with the default
      ``'ignore'`` they are ignore pixels, not instances. When the dataset is built,
      a WARNING in the log counts them and names ``crowd='instance'``.
    - an annotation with an empty segmentation (CVAT writes rectangles as
      ``segmentation: []``: a box without a mask) has no mask to train or score:
      ``empty_segmentation='error'`` (default) refuses the dataset naming the
      annotations, their images and the JSON; ``'drop'`` leaves them out, counted in
      the WARNING.
    - when, by these rules, no annotation of the JSON gives an instance, building
      the dataset fails, naming the counts and the options.

    Raises, when built: the JSON missing or malformed, an annotation whose image
    is missing from the JSON's ``images`` or whose category is unknown, an image
    file missing on disk or empty (0 bytes), an image without ``height`` /
    ``width`` that cannot be read (all named); ``metainfo`` classes that differ from
    the JSON's; empty segmentations (above); no instance at all (above).

    Args:
        ann_file: the COCO JSON, relative to ``data_root``.
        data_prefix: ``dict(img_path=...)``: the folder the JSON's file names are
            relative to.
        metainfo: optional ``palette``; ``classes``, if given, must be
            ``('background', *category names)``.
        reduce_zero_label: must be False (0 is the background).
        empty_segmentation: ``'error'`` or ``'drop'``, for annotations whose
            segmentation holds no pixel (above).
        **kwargs: arguments of :class:`~mmseg_sam.datasets.CheckedSegDataset`.
    """

    def __init__(
        self,
        ann_file: str,
        data_prefix: dict | None = None,
        metainfo: dict | None = None,
        reduce_zero_label: bool = False,
        empty_segmentation: str = 'error',
        **kwargs: Any,
    ) -> None:
        if reduce_zero_label:
            raise ValueError(
                'COCOInstanceSegDataset: reduce_zero_label must be False (0 is the background class)'
            )
        if empty_segmentation not in _EMPTY:
            raise ValueError(f'empty_segmentation must be one of {_EMPTY}, got {empty_segmentation!r}')
        self.empty_segmentation = empty_segmentation
        data_root = kwargs.get('data_root')
        path = ann_file if data_root is None or osp.isabs(ann_file) else osp.join(data_root, ann_file)
        self.coco = read_coco_json(path)
        classes = ('background', *(str(c.get('name', c['id'])) for c in self.coco['categories']))
        metainfo = dict(metainfo or {})
        if 'classes' in metainfo and tuple(metainfo['classes']) != classes:
            raise ValueError(
                f'COCOInstanceSegDataset: metainfo classes {tuple(metainfo["classes"])} differ from those of '
                f'{path}, {classes} (background, then the JSON categories in order)'
            )
        metainfo['classes'] = classes
        super().__init__(
            ann_file=ann_file,
            data_prefix=dict(img_path='') if data_prefix is None else data_prefix,
            metainfo=metainfo,
            reduce_zero_label=False,
            check_masks=False,
            **kwargs,
        )

    def _loader(self) -> LoadCOCOInstances | None:
        """The pipeline's LoadCOCOInstances, None when the pipeline loads no annotation (inference)."""
        steps = getattr(getattr(self, 'pipeline', None), 'transforms', ())
        return next((step for step in steps if isinstance(step, LoadCOCOInstances)), None)

    def _image_size(self, image: dict, img_path: str) -> tuple[int, int]:
        """``(height, width)`` of a JSON image: its own entries, else the image file's header."""
        if image.get('height') is not None and image.get('width') is not None:
            return int(image['height']), int(image['width'])
        if self.backend_args is not None:
            raise ValueError(
                f'COCOInstanceSegDataset: image {image.get("id")} ({img_path}) of {self.ann_file} has no '
                '"height" and "width", and its file is read through a file backend: add both to the JSON'
            )
        try:
            with Image.open(img_path) as img:
                width, height = img.size
        except (OSError, SyntaxError) as error:
            raise ValueError(
                f'COCOInstanceSegDataset: image {image.get("id")} of {self.ann_file} has no "height" and '
                f'"width", and its file {img_path} cannot be read to find them: {error}'
            ) from error
        return height, width

    def _split_annotations(self, files: dict[Any, str]) -> dict[Any, list[dict]]:
        """Each image's annotations as data-list instances; empty segmentations refused or dropped, counted.

        Sets ``self.annotation_counts``: ``total``, ``crowd``, ``empty`` (dropped), ``instances``
        (what gives an instance under the pipeline's ``crowd`` rule, None without a loader).
        """
        label_of = {c['id']: i for i, c in enumerate(self.coco['categories'], start=1)}
        by_image: dict[Any, list[dict]] = {image['id']: [] for image in self.coco['images']}
        empty, crowd = [], 0
        for ann in self.coco['annotations']:
            if _is_empty(ann.get('segmentation', [])):
                empty.append(ann)
                continue
            crowd += bool(ann.get('iscrowd', 0))
            by_image[ann['image_id']].append(
                dict(
                    ann_id=ann.get('id'),
                    label=label_of[ann['category_id']],
                    segmentation=ann['segmentation'],
                    iscrowd=int(ann.get('iscrowd', 0)),
                )
            )
        if empty and self.empty_segmentation == 'error':
            boxes = sum(_has_box(a) for a in empty)
            listed = _listed(
                [
                    f'annotation {a.get("id")} (image {files[a["image_id"]]}'
                    + (f', bbox {a["bbox"]})' if _has_box(a) else ', no bbox)')
                    for a in empty
                ]
            )
            raise ValueError(
                f'COCOInstanceSegDataset: {len(empty)} of {len(self.coco["annotations"])} annotations of '
                f'{self.ann_file} have an empty segmentation, {boxes} of them with a bbox only (CVAT writes '
                f'rectangles so): {listed}. Prompted training and scoring need a mask per instance: draw them '
                "as polygons or masks, or set COCOInstanceSegDataset(empty_segmentation='drop') to leave them out"
            )
        loader = self._loader()
        instances = None
        if loader is not None:
            total = sum(len(anns) for anns in by_image.values())
            instances = total if loader.crowd == 'instance' else total - crowd
        self.annotation_counts = dict(
            total=len(self.coco['annotations']), crowd=crowd, empty=len(empty), instances=instances
        )
        return by_image

    def _report_annotations(self) -> None:
        """Warn about the annotations that give no instance; raise when none gives one."""
        counts = self.annotation_counts
        loader = self._loader()
        lost = []
        if loader is not None and counts['crowd'] and loader.crowd != 'instance':
            becomes = 'ignore pixels' if loader.crowd == 'ignore' else 'background'
            lost.append(
                f'{counts["crowd"]} are crowd (iscrowd=1) and become {becomes} under '
                f'LoadCOCOInstances(crowd={loader.crowd!r}), not instances (CVAT exports brush and mask shapes '
                "as crowd: LoadCOCOInstances(crowd='instance') makes each an instance)"
            )
        if counts['empty']:
            lost.append(
                f'{counts["empty"]} have an empty segmentation (a box or nothing, no mask) and are dropped '
                "(empty_segmentation='drop')"
            )
        head = f'COCOInstanceSegDataset: of the {counts["total"]} annotations of {self.ann_file}, '
        if counts['instances'] == 0:
            raise ValueError(
                f'{head}none gives an instance to train or score: '
                + ('; '.join(lost) if lost else 'the JSON has no annotation')
            )
        if lost:
            MMLogger.get_current_instance().warning(
                f'{head}{"; ".join(lost)}; {counts["instances"]} give instances'
            )

    def drop_hint(self) -> str:
        """The crowd annotations that give no instance, for the message of a dataset that drops every sample."""
        counts, loader = self.annotation_counts, self._loader()
        if loader is None or not counts['crowd'] or loader.crowd == 'instance':
            return ''
        return (
            f'{counts["crowd"]} of the {counts["total"]} annotations of {self.ann_file} are crowd (iscrowd=1), '
            f"which LoadCOCOInstances(crowd={loader.crowd!r}) makes no instance: crowd='instance' makes each an "
            'instance (CVAT brush masks). '
        )

    def load_data_list(self) -> list[dict]:
        """One entry per image of the JSON, with its annotations.

        Raises:
            FileNotFoundError: when image files named by the JSON are missing.
            ValueError: when the JSON lists no image, an image file is empty or has
                no size, an annotation has an empty segmentation (with
                ``empty_segmentation='error'``), or no annotation gives an instance.
        """
        img_dir = self.data_prefix.get('img_path', '') or ''
        files = {image['id']: osp.join(img_dir, image['file_name']) for image in self.coco['images']}
        if not files:
            raise ValueError(f'COCOInstanceSegDataset: {self.ann_file} lists no image')
        if self.backend_args is None:
            missing = [p for p in files.values() if not osp.isfile(p)]
            if missing:
                raise FileNotFoundError(
                    f'COCOInstanceSegDataset: {len(missing)} of {len(files)} images of {self.ann_file} are '
                    f'not in {img_dir!r} (data_prefix img_path): {_listed(missing)}'
                )
            empty_files = [p for p in files.values() if osp.getsize(p) == 0]
            if empty_files:
                raise ValueError(
                    f'COCOInstanceSegDataset: {len(empty_files)} of {len(files)} images of {self.ann_file} are '
                    f'empty files (0 bytes): {_listed(empty_files)}; copy them again or remove them from the JSON'
                )
        by_image = self._split_annotations(files)
        self._report_annotations()
        data_list = []
        for image in self.coco['images']:
            img_path = files[image['id']]
            height, width = self._image_size(image, img_path)
            data_list.append(
                dict(
                    img_path=img_path,
                    seg_map_path=None,
                    ann_file=self.ann_file,
                    coco_image_id=image['id'],
                    height=height,
                    width=width,
                    instances=by_image[image['id']],
                    label_map=None,
                    reduce_zero_label=False,
                    seg_fields=[],
                )
            )
        return data_list


def _decode(segmentation: list | dict, height: int, width: int, where: str) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as a bool ``(H, W)`` mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        polygons = [p for p in segmentation if isinstance(p, list)]
        if len(polygons) != len(segmentation) or any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError(f'{where}: a polygon must be a list of at least 3 (x, y) pairs')
        if not polygons:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    else:
        size = segmentation.get('size')
        if list(size or ()) != [height, width]:
            raise ValueError(f'{where}: the RLE size {size} differs from the image size [{height}, {width}]')
        counts = segmentation.get('counts')
        # uncompressed RLE (a list of run lengths, as iscrowd annotations are stored) or compressed (a string)
        rle = (
            mask_utils.frPyObjects(segmentation, height, width) if isinstance(counts, list) else segmentation
        )
    return mask_utils.decode(rle).astype(bool)


@TRANSFORMS.register_module()
class LoadCOCOInstances(BaseTransform):
    """Decode the COCO annotations of a sample into ``gt_seg_map``, with the instance ids in it.

    Polygons and RLE (uncompressed, as COCO stores crowd regions, or compressed)
    are decoded with ``pycocotools``. The class map holds each instance's class
    index (``label``: category order of the JSON plus one), 0 elsewhere; the id
    map holds ``j + 1`` on the pixels of the image's ``j``-th annotation, 0
    elsewhere. Where instances overlap, a pixel belongs to the smaller one
    (instances are painted from the largest to the smallest), and an instance
    hidden entirely disappears. Both travel in ``gt_seg_map`` as ``class + 256 *
    id`` (int32, see :class:`~mmseg_sam.datasets.LoadInstanceIdAnnotations` for
    why), which :class:`~mmseg_sam.datasets.GenerateInstances`, after the
    geometric transforms, splits again into the class map and one instance per id.

    Crowd annotations (``iscrowd=1``, one region over many objects) follow
    ``crowd``:

    - ``'ignore'`` (default, as COCO's detection training does): the region is
      labelled ``ignore_index`` (no loss, no instance, no negative point), except
      where a non-crowd instance covers it;
    - ``'instance'``: an instance like any other;
    - ``'background'``: dropped, its pixels stay background.

    Required keys: ``instances``, ``height``, ``width`` (from
    :class:`COCOInstanceSegDataset`); ``ori_shape`` or ``img`` when present (the
    loaded image's size is checked against the JSON's).
    Added keys: ``gt_seg_map`` (int32 ``(H, W)``, ``class + 256 * id``; appended to
    ``seg_fields``), ``seg_map_holds_instance_ids``.

    Args:
        crowd: ``'ignore'``, ``'instance'`` or ``'background'``.
        ignore_index: the label of ignored pixels (mmseg: 255).

    Raises:
        ValueError: on a malformed polygon or RLE, an RLE or image whose size
            differs from the JSON's, naming the image, the JSON and the annotation.
    """

    needs_annotations = True  # inference pipelines drop it (see transforms.roles)

    def __init__(self, crowd: str = 'ignore', ignore_index: int = 255) -> None:
        if crowd not in _CROWD:
            raise ValueError(f'crowd must be one of {_CROWD}, got {crowd!r}')
        self.crowd = crowd
        self.ignore_index = ignore_index

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        """Add ``gt_seg_map`` (classes and ids) decoded from ``instances``."""
        missing = [k for k in ('instances', 'height', 'width') if k not in results]
        if missing:
            raise ValueError(
                f'LoadCOCOInstances needs {missing} for image {results.get("img_path")}: use it with '
                'COCOInstanceSegDataset'
            )
        h, w = results['height'], results['width']
        # the loaded image's size (ori_shape: before a Resize placed ahead of this step)
        loaded = results.get('ori_shape', results['img'].shape if 'img' in results else None)
        if loaded is not None and tuple(loaded[:2]) != (h, w):
            raise ValueError(
                f'{sample_files(results)}: the image is {loaded[0]}x{loaded[1]} (HxW), the JSON says {h}x{w}'
            )
        if len(results['instances']) >= np.iinfo(np.uint16).max:
            raise ValueError(f'{sample_files(results)}: more than 65534 annotations on one image')
        seg = np.zeros((h, w), np.uint8)
        ids = np.zeros((h, w), np.uint16)
        crowd = np.zeros((h, w), bool)
        painted = []
        for j, ann in enumerate(results['instances'], start=1):
            where = f'{sample_files(results)}, annotation {ann.get("ann_id")}'
            if ann['iscrowd'] and self.crowd != 'instance':
                if self.crowd == 'ignore':
                    crowd |= _decode(ann['segmentation'], h, w, where)
                continue
            mask = _decode(ann['segmentation'], h, w, where)
            painted.append((-int(mask.sum()), j, mask, ann['label']))
        seg[crowd] = self.ignore_index
        for _, j, mask, label in sorted(painted, key=lambda item: item[:2]):  # largest first, smaller on top
            seg[mask] = label
            ids[mask] = j
        results['gt_seg_map'] = encode_instance_ids(seg, ids, self.ignore_index)
        results[ENCODED_IDS] = True
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(crowd={self.crowd!r}, ignore_index={self.ignore_index})'
