# Pipelines and loaders of every benchmark dataset base here (*_1024x1024.py): images and
# class-index masks in mmseg's layout as tools/dataset_converters/ writes them,
#   data_root/img_dir/{train,val,test}/  and  data_root/ann_dir/{train,val,test}/,
# resized to SAM's 1024x1024 input. A dataset base adds the loaders' dataset type and
# data_root and its evaluator. The test split validates; a dataset with a val split sets
#   val_dataloader = dict(dataset=dict(type=..., data_root=..., data_prefix=_base_.val_split))
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
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'), pipeline=train_pipeline
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'), pipeline=test_pipeline
    ),
)
test_dataloader = val_dataloader
val_split = dict(img_path='img_dir/val', seg_map_path='ann_dir/val')
