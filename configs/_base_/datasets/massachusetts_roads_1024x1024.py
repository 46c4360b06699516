# Massachusetts Roads: train 1108, val 14, test 49 tiles of 1500x1500. Convert first:
#   python tools/dataset_converters/massachusetts_roads.py /path/to/massachusetts-roads-dataset \
#       -o data/massachusetts_roads
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='MassachusettsRoadsDataset', data_root='data/massachusetts_roads')  # read by every loader
train_dataloader = test_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dict(dataset, data_prefix=_base_.val_split))
val_evaluator = test_evaluator = dict(type='BinaryIoUMetric')  # foreground IoU, per image then averaged
