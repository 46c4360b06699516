# ISIC 2017 skin lesions (task 1): train 2000, val 150, test 600 images. Convert first:
#   python tools/dataset_converters/isic2017.py /path/to/ISIC2017 -o data/isic2017
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='ISIC2017Dataset', data_root='data/isic2017')  # read by every loader
train_dataloader = test_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dict(dataset, data_prefix=_base_.val_split))
val_evaluator = test_evaluator = dict(type='BinaryIoUMetric')  # foreground IoU, per image then averaged
