# SAM ViT-B + Conv-LoRA (the reference preset: r 3, alpha 32, 8 experts) + one mask token per class
# on mmseg's synapse.py base: Synapse multi-organ CT (9 classes, background included), slices
# resized to 224x224. Sliding-window test at the training crop, stride 2/3 of it. Schedule:
# configs/mmseg_datasets/README.md.
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-multiclass.py',
    'mmseg::_base_/datasets/synapse.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_20k.py',
]
crop_size = _base_.img_scale  # (224, 224): the base resizes instead of cropping
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=224, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)),
    decode_head=dict(num_classes=9, out_channels=9),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(149, 149)),
)
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
