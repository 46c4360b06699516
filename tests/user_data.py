"""Users' own binary data as the README lays it out, and the README's binary recipe config.

Shared by the README recipe test and the bad-input table: JPEG images of odd sizes and
0/255 PNG masks in ``images/{train,val}`` / ``masks/{train,val}``; the recipe config is
taken from the README's own text with only the architecture (tiny SAM), the crop size and
the schedule changed.
"""

import re
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import REPO, TINY_ARCH, TINY_HEAD, TINY_IMG

RECIPE_NAME = 'configs/my_project/sam-vit-b_lora-qv-r4_my-data-1024x1024.py'


def readme_recipe() -> str:
    """The python block of the README that starts with the recipe's file name."""
    blocks = re.findall(r'```python\n(.*?)```', (REPO / 'README.md').read_text(), flags=re.S)
    recipes = [b for b in blocks if b.startswith(f'# {RECIPE_NAME}')]
    assert len(recipes) == 1, f'README has {len(recipes)} blocks starting with # {RECIPE_NAME}'
    return recipes[0]


def write_user_data(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> None:
    """JPEG images of odd sizes with a bright disc, 0/255 PNG masks of the disc."""
    rng = np.random.default_rng(0)
    for split, shapes in sizes.items():
        for i, (h, w) in enumerate(shapes):
            mask = np.zeros((h, w), np.uint8)
            cv2.circle(
                mask,
                (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))),
                min(h, w) // 4,
                255,
                -1,
            )
            img = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
            img[mask > 0] += 150
            (root / 'images' / split).mkdir(parents=True, exist_ok=True)
            (root / 'masks' / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / 'images' / split / f'{i:04d}.jpg'), img)
            cv2.imwrite(str(root / 'masks' / split / f'{i:04d}.png'), mask)


def write_configs(tmp: Path, data_root: Path, sam_checkpoint: Path) -> Path:
    """The README recipe under ``tmp/configs/my_project/`` and a tiny config inheriting it."""
    text = readme_recipe()
    assert 'crop_size = (1024, 1024)' in text and "'../_base_/" in text
    text = text.replace("'../_base_/", repr(str(REPO / 'configs/_base_'))[:-1] + '/')
    text = text.replace('crop_size = (1024, 1024)', f'crop_size = ({TINY_IMG}, {TINY_IMG})')
    recipe = tmp / RECIPE_NAME
    recipe.parent.mkdir(parents=True)
    recipe.write_text(text)
    tiny = tmp / 'tiny_recipe.py'
    loader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=str(data_root)))
    tiny.write_text(f"""
_base_ = [{str(recipe)!r}]
model = dict(
    sam_checkpoint={str(sam_checkpoint)!r},
    data_preprocessor=dict(size=({TINY_IMG}, {TINY_IMG})),
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), img_size={TINY_IMG}),
    decode_head=dict(**{TINY_HEAD!r}))
train_dataloader = dict(batch_size=2, **{loader!r})
val_dataloader = {loader!r}
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=4, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
""")
    return tiny
