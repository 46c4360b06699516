# Prompted training and testing on your own instances in a COCO-style JSON (polygons or RLE):
#   data_root/annotations/instances_{train,val}.json  and  data_root/images/{train,val}/<file_name>
# The classes are the JSON's categories in their order (class index 1, 2, ...; 0 background);
# crowd regions are ignored. Images are resized as SAM resizes (the longer side to 1024; the
# data preprocessor pads to 1024x1024). Set data_root in the config.
_base_ = ['./prompted_mmseg-layout_1024x1024.py']
scale = (1024, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCOCOInstances'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    # every annotation is an instance (touching ones stay apart); at most 16 per image
    dict(type='GenerateInstances', min_area=16, max_instances=16, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='shift', num_pos_points=1),
    dict(type='PackPromptedSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadCOCOInstances'),  # after Resize: scored at the original size
    dict(type='GenerateInstances', min_area=16, on_empty='keep'),
    dict(
        type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0
    ),  # tight boxes, as COBOT evaluates
    dict(type='PackPromptedSegInputs'),
]
coco = dict(_delete_=True, type='COCOInstanceSegDataset', data_root='data/my_coco')
train_dataloader = dict(
    dataset=dict(
        coco,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img_path='images/train'),
        pipeline=train_pipeline,
    )
)
val_dataloader = dict(
    dataset=dict(
        coco,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img_path='images/val'),
        pipeline=test_pipeline,
    )
)
test_dataloader = val_dataloader
