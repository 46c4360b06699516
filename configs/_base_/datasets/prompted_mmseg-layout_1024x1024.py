# Prompted training and testing on a semantic dataset in mmseg's layout
#   data_root/img_dir/{train,val}/  and  data_root/ann_dir/{train,val}/ (class-index PNGs),
# its instances the connected components of each class (GenerateInstances), resized as
# SAM resizes (the longer side to 1024; the data preprocessor pads to 1024x1024). Set
# data_root and metainfo (classes) in the config; binary 0/255 masks load with
#   dict(type='LoadBinaryAnnotations') in place of LoadAnnotations.
scale = (1024, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='SAMResizeLongestSide', long_side=scale[0]),  # SamPredictor's pixels (PIL bilinear)
    dict(type='RandomFlip', prob=0.5),
    # per image at most 16 instances of >= 16 pixels; an image without one is replaced
    dict(type='GenerateInstances', min_area=16, max_instances=16, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='shift', num_pos_points=1),
    dict(type='PackPromptedSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SAMResizeLongestSide', long_side=scale[0]),  # SamPredictor's pixels (PIL bilinear)
    # annotations after Resize: instances, prompts and scores at the original size
    dict(type='LoadAnnotations'),
    dict(type='GenerateInstances', min_area=16, on_empty='keep'),
    # the tight boxes, as COBOT's released evaluation (box_jitter='shift' with seed=0: jittered, the same
    # every run); the seed also fixes the points
    dict(type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0),
    dict(type='PackPromptedSegInputs'),
]
dataset = dict(type='CheckedSegDataset', data_root='data/my_data', img_suffix='.jpg', seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='SeededDefaultSampler', shuffle=True),  # draws keyed by the sample's place in the run
    dataset=dict(
        dataset,
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
        dataset, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'), pipeline=test_pipeline
    ),
)
test_dataloader = val_dataloader
val_evaluator = test_evaluator = dict(type='InteractiveSegMetric')
