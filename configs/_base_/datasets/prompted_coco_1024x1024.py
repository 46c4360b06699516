# Prompted training and testing on your own instances in a COCO-style JSON (polygons or RLE):
#   data_root/annotations/instances_{train,val}.json  and  data_root/images/{train,val}/<file_name>
# The classes are the JSON's categories in their order (class index 1, 2, ...; 0 background):
# set model.decode_head.num_classes to their number + 1. Crowd regions are ignored; CVAT writes
# brush masks as crowd: dict(type='LoadCOCOInstances', crowd='instance') makes them instances.
# Rectangles without a mask (segmentation []) are refused; empty_segmentation='drop' on the
# dataset leaves them out. Images are resized as SAM resizes (the longer side to 1024; the
# data preprocessor pads to 1024x1024). Set data_root in the config.
_base_ = ['./prompted_mmseg-layout_1024x1024.py']
# the semantic base's pipelines with the COCO loader in place of LoadAnnotations (the same place:
# before Resize in training, after it in testing, so test scores are at the original size); every
# annotation is an instance, touching ones stay apart
train_pipeline = [
    dict(type='LoadCOCOInstances') if step.type == 'LoadAnnotations' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(type='LoadCOCOInstances') if step.type == 'LoadAnnotations' else step
    for step in _base_.test_pipeline
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
