# SBU-Shadow: train 4089, test 638 images; the test split validates. Convert the release first:
#   python tools/dataset_converters/sbu.py /path/to/SBU-shadow -o data/sbu
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='SBUDataset', data_root='data/sbu')  # read by every loader
train_dataloader = val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(type='BERMetric')  # balanced error rate, per image then averaged
