# The Conv-LoRA reference's optimisation, without a length: AdamW (lr 1e-4, weight decay
# 1e-4 not on biases and norms, eps 1e-6), linear decay to 0 over the whole run, no
# warm-up, grad clip 1.0 (the reference also trains in fp16 AMP: `tools/train.py --amp`).
# The length comes from adamw-linear_2k.py (2000 iterations) or adamw-linear_epochs.py (the
# benchmarks' epochs as iterations): train_cfg.max_iters is required, IterBasedTrainLoop
# cannot be built without it.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PEFTOptimWrapperConstructor',  # frozen SAM weights: one log line, not hundreds
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0),
)
# No `end`: MMEngine's runner sets it to train_cfg.max_iters, so the rate reaches 0 at
# the last iteration whatever the length.
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop')
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
)
