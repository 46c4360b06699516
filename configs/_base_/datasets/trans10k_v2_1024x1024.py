# Trans10K-v2 transparent objects (11 fine-grained classes + background): train 5000,
# val 1000, test 4428 images. Convert first:
#   python tools/dataset_converters/trans10k_v2.py /path/to/Trans10K_cls12 -o data/trans10k_v2
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='Trans10KV2Dataset', data_root='data/trans10k_v2')  # read by every loader
train_dataloader = test_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dict(dataset, data_prefix=_base_.val_split))
val_evaluator = test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
