default_scope = 'mmseg'
# Registers mmseg_sam's models in mmseg's registries, so mmseg's own tools
# (and `mim train mmseg`) work with these configs too.
custom_imports = dict(imports=['mmseg_sam'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# A fixed seed: MMEngine seeds the dataloader before it reads a checkpoint, so only a fixed
# seed lets --resume end with the same parameters as an uninterrupted run; set another value
# (or --cfg-options randomness.seed=N) for other draws.
randomness = dict(seed=0)
tta_model = dict(
    type='SAMSegTTAModel'
)  # merges probabilities; --tta flips horizontally unless tta_pipeline is set
# SAMCheckpointHook saves only what the SAM checkpoint does not hold (PEFT, head,
# optimizer state) and checks every load strictly; save_frozen=True keeps full files.
# RNGStateHook stores the random generators' states so that --resume continues the
# same random streams; AtomicCheckpointWritesHook makes checkpoint writes atomic
# (a crash mid-write never replaces the last good checkpoint); ModelDatasetCheckHook
# fails before the first step when the head's classes do not fit the dataset's;
# StopOnNonFiniteHook stops a diverging run (NaN / inf loss or gradient) with an error and
# never writes a non-finite checkpoint over the finite ones.
custom_hooks = [
    dict(type='ModelDatasetCheckHook'),
    dict(type='TrainableParamsHook'),
    dict(type='SAMCheckpointHook', save_frozen=False),
    dict(type='RNGStateHook'),
    dict(type='AtomicCheckpointWritesHook'),
    dict(type='StopOnNonFiniteHook', patience=1),
]
