# Leaf disease segmentation (Kaggle, Rath 2023): train 498, test 90 images (the release's
# valid split). Convert first:
#   python tools/dataset_converters/leaf_disease.py /path/to/leaf-disease-segmentation -o data/leaf_disease
# Schedule of the reference (Conv-LoRA, lr 3e-4): 30 epochs, ceil(498 / 4) * 30 = 3750 iterations
# at batch 4. The test set is also the validation set.
dataset_type = 'LeafDiseaseDataset'
data_root = 'data/leaf_disease'
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
val_evaluator = dict(type='BinaryIoUMetric')  # foreground IoU, per image then averaged
test_evaluator = val_evaluator
