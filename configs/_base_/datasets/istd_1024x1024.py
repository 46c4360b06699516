# ISTD shadows: train 1330, test 540 images (shadow image A, mask B); the test split
# validates. Convert first:
#   python tools/dataset_converters/istd.py /path/to/ISTD_Dataset -o data/istd
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='ISTDDataset', data_root='data/istd')  # read by every loader
train_dataloader = val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(type='BERMetric')  # balanced error rate, per image then averaged
