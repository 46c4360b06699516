# `make demo DEMO_ARGS=--prompted`: the small SAM-architecture demo model (random weights, frozen
# encoder + LoRA on q and v) with SAM's whole promptable decoder, trained with prompts on the
# instances of the synthetic demo data (its connected foreground regions) at 128x128 on a CPU:
# per instance a box (SAM's noise) or one point (50 / 50), then one correction point from the
# error region, SAM's focal + Dice (20 : 1) and IoU losses. Evaluated per instance with its
# exact box and with 5 simulated clicks (InteractiveSegMetric).
_base_ = [
    '../_base_/models/sam-vit-b_prompted.py',
    '../_base_/datasets/demo_binary.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_2k.py',
]
img_size = 128
crop_size = (img_size, img_size)
small_arch = dict(
    _delete_=True,  # replaces the base's arch='vit_b'
    embed_dims=192,
    num_layers=4,
    num_heads=4,
    global_attn_indexes=(1, 3),
    window_size=8,
    patch_size=8,
    out_channels=64,
)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=small_arch, img_size=img_size, peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))
    ),
    decode_head=dict(
        image_size=img_size,
        patch_size=8,
        embed_dims=64,
        decoder_num_heads=4,
        decoder_mlp_dims=256,
        iou_head_hidden_dim=64,
        train_prompting=dict(box_prob=0.5, correction_rounds=1),
        test_prompting=dict(box=True, clicks=5),
        # a small model on CPU: one decoder call per round is faster, its memory is small anyway
        instance_chunk=None,
    ),
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateInstances', min_area=16, max_instances=8, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='sam', num_pos_points=1),
    dict(type='PackPromptedSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='GenerateInstances', min_area=16, on_empty='keep'),
    dict(type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0),
    dict(type='PackPromptedSegInputs'),
]
train_dataloader = dict(
    sampler=dict(type='SeededInfiniteSampler', shuffle=True), dataset=dict(pipeline=train_pipeline)
)
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_evaluator = test_evaluator = dict(_delete_=True, type='InteractiveSegMetric')
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# 1000 iterations (the demo must finish in minutes on a CPU), linear decay to 0.
train_cfg = dict(max_iters=1000, val_interval=500)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1000, by_epoch=False)]
