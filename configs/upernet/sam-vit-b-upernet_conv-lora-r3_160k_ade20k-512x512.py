# SAM ViT-B + Conv-LoRA (the reference preset) as the encoder of mmseg's UPerHead (+ FCNHead
# auxiliary) on mmseg's ADE20K base (150 classes, reduce_zero_label, 512x512 crops): the
# ViTDet-style baseline of configs/_base_/models/sam-vit-b_upernet.py. Sliding-window test at
# the training crop, stride 2/3 of it; the schedule of configs/mmseg_datasets/README.md.
_base_ = [
    '../_base_/models/sam-vit-b_upernet.py',
    'mmseg::_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_160k.py',
]
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    data_preprocessor=dict(size=_base_.crop_size),
    backbone=dict(img_size=512, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
    test_cfg=dict(mode='slide', crop_size=_base_.crop_size, stride=(341, 341)),
)
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
