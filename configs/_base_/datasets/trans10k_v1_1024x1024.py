# Trans10K-v1 transparent objects (background, things, stuff): train 5000, val 1000,
# test 4428 images. Convert first:
#   python tools/dataset_converters/trans10k_v1.py /path/to/Trans10K -o data/trans10k_v1
# The easy/hard subsets are listed in data/trans10k_v1/splits/{val,test}_{easy,hard}.txt:
# add ann_file='splits/test_hard.txt' to the test dataset to evaluate one of them.
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='Trans10KV1Dataset', data_root='data/trans10k_v1')  # read by every loader
train_dataloader = test_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dict(dataset, data_prefix=_base_.val_split))
val_evaluator = test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
