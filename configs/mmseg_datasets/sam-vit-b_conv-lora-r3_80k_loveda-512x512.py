# SAM ViT-B + Conv-LoRA (the reference preset: r 3, alpha 32, 8 experts) + one mask token per class
# on mmseg's loveda.py base: LoveDA (7 classes; reduce_zero_label: label 0, no-data, is ignored),
# 512x512 crops of 1024x1024 tiles. Sliding-window test at the training crop, stride 2/3 of it.
# Schedule: configs/mmseg_datasets/README.md.
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-multiclass.py',
    'mmseg::_base_/datasets/loveda.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_80k.py',
]
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    data_preprocessor=dict(size=_base_.crop_size),
    backbone=dict(img_size=512, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)),
    decode_head=dict(num_classes=7, out_channels=7),
    test_cfg=dict(mode='slide', crop_size=_base_.crop_size, stride=(341, 341)),
)
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
