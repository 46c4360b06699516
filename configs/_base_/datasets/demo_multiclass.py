# Multi-class variant of the synthetic demo data: objects whose class is their
# texture family (stripes / checker / dots), written by
# `python tools/dataset_converters/generate_demo_data.py data/demo_multiclass --mode multiclass`.
_base_ = ['./demo_binary.py']
data_root = 'data/demo_multiclass'
metainfo = dict(
    classes=('background', 'stripes', 'checker', 'dots'),
    palette=[[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255]],
)
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
