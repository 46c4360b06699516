# The synthetic demo dataset (textured objects on textured backgrounds), written by
# `python tools/dataset_converters/generate_demo_data.py data/demo_binary --mode binary`:
# mmseg's layout with PNG images and a val split, trained at 128x128 on a CPU.
_base_ = ['./mmseg-layout_1024x1024.py']
crop_size = (128, 128)
# the shared pipelines, resized to crop_size
train_pipeline = [
    dict(step, scale=crop_size) if step.type == 'Resize' else step for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=crop_size) if step.type == 'Resize' else step for step in _base_.test_pipeline
]
metainfo = dict(classes=('background', 'foreground'), palette=[[0, 0, 0], [255, 64, 64]])
dataset = dict(
    type='CheckedSegDataset',  # BaseSegDataset + checks of folders, mask sizes and image bit depth
    data_root='data/demo_binary',
    metainfo=metainfo,
    img_suffix='.png',
    seg_map_suffix='.png',
)
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(
    num_workers=2, dataset=dict(dataset, data_prefix=_base_.val_split, pipeline=test_pipeline)
)
val_evaluator = test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice'])
