"""COCO JSONs as labelling tools export them, and their images, written for the tests.

- CVAT ("COCO 1.0"): category ids as the project numbered its labels (here 1, 3, 7), polygons with
  ``iscrowd=0``, brush and mask shapes as uncompressed RLE with ``iscrowd=1``, rectangles as
  ``segmentation: []`` with a ``bbox``; ``attributes`` on every annotation, ``licenses`` and
  ``info`` blocks; images without annotations listed.
- Label Studio: image, category and annotation ids from 0, ``file_name`` with the ``images/``
  folder of the export, float polygon coordinates, rectangles as ``segmentation: []``.
- Detectron2-style (``pycocotools``): compressed RLE strings, ``iscrowd=0``.

Images: an RGB JPEG, a grey PNG, an RGBA PNG and one without annotations, 24 x 32 (H x W).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

H, W = 24, 32
CATEGORIES = [dict(id=1, name='cat', supercategory=''), dict(id=3, name='dog', supercategory=''),
              dict(id=7, name='bird', supercategory='')]  # fmt: skip
CLASS_OF = {1: 1, 3: 2, 7: 3}  # category id -> class index (JSON order, 0 the background)


def disc(cx: int, cy: int, r: int) -> np.ndarray:
    """A bool ``(H, W)`` disc, as a brush stroke."""
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def uncompressed_rle(mask: np.ndarray) -> dict:
    """CVAT's RLE of a brush mask: column-major run lengths starting with background, ``size`` [H, W]."""
    flat = mask.T.ravel().astype(np.uint8)  # column-major, as COCO's RLE
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0]:
        runs = [0, *runs]
    return dict(counts=runs, size=[int(mask.shape[0]), int(mask.shape[1])])


def compressed_rle(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE (a string), as Detectron2 and Roboflow's mask exports write it."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=rle['size'], counts=rle['counts'].decode('ascii'))


def box_of(mask: np.ndarray) -> list[float]:
    """COCO's ``[x, y, w, h]`` of a mask (pixel corners)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def write_images(folder: Path) -> dict[str, tuple[int, int]]:
    """The export's images under ``folder``; returns ``file_name -> (height, width)``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (H, W, 3)).astype(np.uint8)
    assert cv2.imwrite(str(folder / 'street.jpg'), rgb)
    assert cv2.imwrite(str(folder / 'scan_grey.png'), rgb[..., 0])
    assert cv2.imwrite(str(folder / 'logo_rgba.png'), np.dstack([rgb, np.full((H, W), 200, np.uint8)]))
    assert cv2.imwrite(str(folder / 'unlabelled.png'), rgb)
    return {name: (H, W) for name in ('street.jpg', 'scan_grey.png', 'logo_rgba.png', 'unlabelled.png')}


# the objects of the CVAT export: (annotation id, image id, category id, shape, mask)
POLYGON = np.zeros((H, W), bool)
POLYGON[2:8, 3:11] = True  # the polygon (3, 2)-(11, 8) on pixel corners
BRUSH = disc(22, 14, 4)
RECTANGLE_BOX = [18.0, 2.0, 9.0, 6.0]
GREY_BRUSH = disc(8, 16, 3)
RGBA_POLYGON = np.zeros((H, W), bool)
RGBA_POLYGON[10:20, 12:28] = True


def _cvat_annotation(ann_id: int, image_id: int, category_id: int, segmentation, bbox, iscrowd: int) -> dict:
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        segmentation=segmentation,
        area=float(bbox[2] * bbox[3]),
        bbox=bbox,
        iscrowd=iscrowd,
        attributes=dict(occluded=False, rotation=0.0),
    )


def write_cvat_export(
    root: Path, brush_only: bool = False, rectangles: bool = True, drop_sizes: bool = False
) -> str:
    """A CVAT "COCO 1.0" export under ``root``: ``annotations/instances_default.json`` and ``images/``.

    Args:
        root: the export's folder.
        brush_only: every object drawn with the brush (``iscrowd=1`` RLE), none as a polygon.
        rectangles: include a rectangle (``segmentation: []``) on the grey image.
        drop_sizes: leave ``height`` and ``width`` out of the images (as hand-written JSONs do).

    Returns:
        The JSON's path relative to ``root``.
    """
    sizes = write_images(root / 'images')
    names = list(sizes)
    images = [
        dict(id=i, width=W, height=H, file_name=name, license=0, flickr_url='', coco_url='', date_captured=0)
        for i, name in enumerate(names, start=1)
    ]
    if drop_sizes:
        for image in images:
            del image['width'], image['height']
    polygon = [[3.0, 2.0, 11.0, 2.0, 11.0, 8.0, 3.0, 8.0]]
    rgba_polygon = [[12.0, 10.0, 28.0, 10.0, 28.0, 20.0, 12.0, 20.0]]
    if brush_only:
        annotations = [
            _cvat_annotation(1, 1, 1, uncompressed_rle(POLYGON), box_of(POLYGON), 1),
            _cvat_annotation(2, 1, 3, uncompressed_rle(BRUSH), box_of(BRUSH), 1),
            _cvat_annotation(3, 2, 7, uncompressed_rle(GREY_BRUSH), box_of(GREY_BRUSH), 1),
            _cvat_annotation(4, 3, 1, uncompressed_rle(RGBA_POLYGON), box_of(RGBA_POLYGON), 1),
        ]
    else:
        annotations = [
            _cvat_annotation(1, 1, 1, polygon, box_of(POLYGON), 0),
            _cvat_annotation(2, 1, 3, uncompressed_rle(BRUSH), box_of(BRUSH), 1),
            _cvat_annotation(3, 2, 7, uncompressed_rle(GREY_BRUSH), box_of(GREY_BRUSH), 1),
            _cvat_annotation(4, 3, 1, rgba_polygon, box_of(RGBA_POLYGON), 0),
        ]
        if rectangles:
            annotations.append(_cvat_annotation(5, 2, 7, [], RECTANGLE_BOX, 0))
    coco = dict(
        licenses=[dict(name='', id=0, url='')],
        info=dict(contributor='', date_created='', description='', url='', version='', year=''),
        categories=CATEGORIES,
        images=images,
        annotations=annotations,
    )
    path = root / 'annotations/instances_default.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return 'annotations/instances_default.json'


def write_label_studio_export(root: Path, rectangles: bool = False) -> str:
    """A Label Studio COCO export under ``root``: ``result.json`` and ``images/`` (ids from 0).

    Polygons with float coordinates, one object as a compressed RLE (Detectron2-style, merged
    into the export by hand), the rectangle of ``rectangles`` as ``segmentation: []``.

    Returns:
        The JSON's path relative to ``root``.
    """
    sizes = write_images(root / 'images')
    images = [dict(width=W, height=H, id=i, file_name=f'images/{name}') for i, name in enumerate(sizes)]
    categories = [dict(id=0, name='bird'), dict(id=1, name='cat'), dict(id=2, name='dog')]
    polygon = [[3.0, 2.0, 11.0, 2.0, 11.0, 8.0, 3.0, 8.0]]
    annotations = [
        dict(id=0, image_id=0, category_id=1, segmentation=polygon, bbox=box_of(POLYGON), ignore=0, iscrowd=0,
             area=48.0),
        dict(id=1, image_id=0, category_id=2, segmentation=compressed_rle(BRUSH), bbox=box_of(BRUSH), ignore=0,
             iscrowd=0, area=float(BRUSH.sum())),
        dict(id=2, image_id=2, category_id=0, segmentation=[[12.0, 10.0, 28.0, 10.0, 28.0, 20.0, 12.0, 20.0]],
             bbox=box_of(RGBA_POLYGON), ignore=0, iscrowd=0, area=160.0),
    ]  # fmt: skip
    if rectangles:
        annotations.append(
            dict(id=3, image_id=1, category_id=0, segmentation=[], bbox=RECTANGLE_BOX, ignore=0, iscrowd=0,
                 area=54.0)
        )  # fmt: skip
    coco = dict(images=images, categories=categories, annotations=annotations,
                info=dict(year=2026, version='1.0', description='', contributor='Label Studio', url='',
                          date_created=''))  # fmt: skip
    (root / 'result.json').write_text(json.dumps(coco))
    return 'result.json'


def coco_dataset_cfg(root: Path, ann_file: str, img_path: str, crowd: str = 'ignore', **kwargs) -> dict:
    """A ``COCOInstanceSegDataset`` config on an export, with the prompted training pipeline's loading steps."""
    return dict(
        type='COCOInstanceSegDataset',
        data_root=str(root),
        ann_file=ann_file,
        data_prefix=dict(img_path=img_path),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadCOCOInstances', crowd=crowd),
            dict(type='GenerateInstances', on_empty='keep'),
            dict(type='PackPromptedSegInputs'),
        ],
        **kwargs,
    )
