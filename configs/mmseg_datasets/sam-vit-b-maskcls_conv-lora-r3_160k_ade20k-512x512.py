# SAM ViT-B + Conv-LoRA (the reference preset: r 3, alpha 32, 8 experts) + mask classification (100
# queries, as Mask2Former on ADE20K and Cityscapes) on mmseg's ade20k.py base: ADE20K (150 classes;
# reduce_zero_label: label 0, 'other', is ignored), 512x512 crops. Sliding-window test at the
# training crop, stride 2/3 of it. Schedule: configs/mmseg_datasets/README.md.
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-maskcls.py',
    'mmseg::_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_160k.py',
]
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    data_preprocessor=dict(size=_base_.crop_size),
    backbone=dict(img_size=512, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)),
    decode_head=dict(num_classes=150, num_queries=100),
    test_cfg=dict(mode='slide', crop_size=_base_.crop_size, stride=(341, 341)),
)
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
