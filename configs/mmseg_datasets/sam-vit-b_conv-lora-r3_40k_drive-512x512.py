# SAM ViT-B + Conv-LoRA (the reference preset: r 3, alpha 32, 8 experts) + the binary head on
# mmseg's drive.py base: DRIVE retinal vessels, binary in mmseg's convention (labels 0/1,
# num_classes=2) with one sigmoid map (out_channels=1); 512x512 crops instead of the base's 64x64 (a
# 4x4 token grid for SAM's 16-pixel patches). Sliding-window test at the training crop, stride 2/3
# of it. Schedule: configs/mmseg_datasets/README.md.
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-binary.py',
    'mmseg::_base_/datasets/drive.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_40k.py',
]
crop_size = (512, 512)
train_pipeline = [
    dict(step, crop_size=crop_size) if step.type == 'RandomCrop' else step for step in _base_.train_pipeline
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))  # inside RepeatDataset
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=512, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
