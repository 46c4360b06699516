# ISTD shadows: train 1330, test 540 images (shadow image A, mask B). Convert first:
#   python tools/dataset_converters/istd.py /path/to/ISTD_Dataset -o data/istd
# Schedule: 10 epochs as the reference does for shadows (SBU): ceil(1330 / 4) * 10 = 3330
# iterations at batch 4. The test set is also the validation set.
dataset_type = 'ISTDDataset'
data_root = 'data/istd'
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
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline,
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
test_dataloader = val_dataloader
val_evaluator = dict(type='BERMetric')  # balanced error rate, per image then averaged
test_evaluator = val_evaluator
