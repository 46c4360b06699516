# Leaf disease segmentation (Kaggle, Rath 2023): train 498, test 90 images (the release's
# valid split); the test split validates. Convert first:
#   python tools/dataset_converters/leaf_disease.py /path/to/leaf-disease-segmentation -o data/leaf_disease
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='LeafDiseaseDataset', data_root='data/leaf_disease')  # read by every loader
train_dataloader = val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(type='BinaryIoUMetric')  # foreground IoU, per image then averaged
