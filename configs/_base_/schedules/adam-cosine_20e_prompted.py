# COBOT's box-prompted protocol (SAM-COBOT remote/train_SAM_box.py): Adam, batch 2, 20 epochs,
# one warm-up epoch, then a cosine decay; lr 1e-4 as the paper states (the released script
# uses 1.5e-4 and weight decay 5e-5). Epoch-based: the length follows the dataset's size.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PEFTOptimWrapperConstructor',
    optimizer=dict(type='Adam', lr=1e-4, weight_decay=5e-5),
    # no decay on biases and norms, as every config here
    paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1, end=20, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
)
