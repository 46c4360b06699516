# Old name of configs/demo/sam-vit-small-maskcls_lora-qv-r4_1k_demo-multiclass-128x128.py,
# kept for mmseg_sam 0.1.x only.
_base_ = ['../demo/sam-vit-small-maskcls_lora-qv-r4_1k_demo-multiclass-128x128.py']

import warnings  # noqa: E402  (after _base_: mmengine reads a config that imports first as a lazy one)

warnings.warn(
    'configs/sam_mask_cls/sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py is renamed '
    'configs/demo/sam-vit-small-maskcls_lora-qv-r4_1k_demo-multiclass-128x128.py; the old name is removed after 0.1.x',
    FutureWarning,
    stacklevel=1,
)
