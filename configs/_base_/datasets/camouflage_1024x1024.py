# Camouflaged objects, the field's protocol (SINet; Conv-LoRA): train on COD10K-train
# (3040 camouflaged images) + CAMO-train (1000), test on COD10K-test (2026), CAMO-test (250)
# and CHAMELEON (76). Convert the three releases first:
#   python tools/dataset_converters/cod10k.py /path/to/COD10K-v3 -o data/cod10k
#   python tools/dataset_converters/camo.py /path/to/CAMO-V.1.0-CVIU2019 -o data/camo
#   python tools/dataset_converters/chameleon.py /path/to/CHAMELEON -o data/chameleon
# Schedule of the reference: 20 epochs of 4040 images at batch 4, ceil(4040 / 4) * 20 = 20200
# iterations. COD10K-test is also the validation set.
dataset_type = 'COD10KDataset'
data_root = 'data/cod10k'
camo_data_root = 'data/camo'
chameleon_data_root = 'data/chameleon'
crop_size = (1024, 1024)
# mmseg's Resize applies `interpolation` to the image only: labels are always resized nearest.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=crop_size, keep_ratio=False, interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False, interpolation='bicubic'),
    # labels are loaded after Resize, so metrics are computed at the original size
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,  # effective batch 4 as the reference: divide by the number of GPUs
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(
                type=dataset_type,
                data_root=data_root,
                data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                pipeline=train_pipeline,
            ),
            dict(
                type='CAMODataset',
                data_root=camo_data_root,
                data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                pipeline=train_pipeline,
            ),
        ],
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        pipeline=test_pipeline,
    ),
)
# To test on CAMO or CHAMELEON instead, in the experiment config:
# test_dataloader = dict(dataset=dict(type='CAMODataset', data_root='data/camo'))  # img_dir/test
# test_dataloader = dict(dataset=dict(type='CHAMELEONDataset', data_root='data/chameleon'))  # img_dir/test
test_dataloader = val_dataloader
val_evaluator = dict(type='SODMetric')  # S-measure, weighted F, mean E-measure, MAE
test_evaluator = val_evaluator
