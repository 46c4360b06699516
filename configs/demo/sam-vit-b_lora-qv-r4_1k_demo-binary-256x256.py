# `SAM_CHECKPOINT=/path/sam_vit_b_01ec64.pth make demo`: SAM ViT-B (frozen) + LoRA on
# q and v + SAM's mask decoder, fine-tuned on the synthetic demo data at 256x256
# (pos_embed and the global rel_pos tables are resized from 1024 on load).
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-binary.py',
    '../_base_/datasets/demo_binary.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_2k.py',
]
img_size = 256
crop_size = (img_size, img_size)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=img_size, peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))),
)
# the demo pipelines, resized to crop_size
train_pipeline = [
    dict(step, scale=crop_size) if step.type == 'Resize' else step for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=crop_size) if step.type == 'Resize' else step for step in _base_.test_pipeline
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# 1000 iterations (the demo must finish in minutes on a CPU), linear decay to 0.
train_cfg = dict(max_iters=1000, val_interval=500)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1000, by_epoch=False)]
