# Massachusetts Roads: train 1108, val 14, test 49 tiles of 1500x1500. Convert first:
#   python tools/dataset_converters/massachusetts_roads.py /path/to/massachusetts-roads-dataset \
#       -o data/massachusetts_roads
# Schedule of the reference (Conv-LoRA, lr 3e-4): 20 epochs, ceil(1108 / 4) * 20 = 5540 iterations
# at batch 4.
dataset_type = 'MassachusettsRoadsDataset'
data_root = 'data/massachusetts_roads'
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
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline,
    ),
)
test_dataloader = dict(
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
val_evaluator = dict(type='BinaryIoUMetric')  # foreground IoU, per image then averaged
test_evaluator = val_evaluator
