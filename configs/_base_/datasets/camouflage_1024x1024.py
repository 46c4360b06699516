# Camouflaged objects, the field's protocol (SINet; Conv-LoRA): train on COD10K-train
# (3040 camouflaged images) + CAMO-train (1000), test on COD10K-test (2026), which also
# validates, CAMO-test (250) and CHAMELEON (76). Convert the three releases first:
#   python tools/dataset_converters/cod10k.py /path/to/COD10K-v3 -o data/cod10k
#   python tools/dataset_converters/camo.py /path/to/CAMO-V.1.0-CVIU2019 -o data/camo
#   python tools/dataset_converters/chameleon.py /path/to/CHAMELEON -o data/chameleon
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='COD10KDataset', data_root='data/cod10k')  # every loader; training adds CAMO
train_split = _base_.train_dataloader.dataset  # the train split's prefixes and pipeline
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[dict(train_split, **dataset), dict(train_split, type='CAMODataset', data_root='data/camo')],
    )
)
val_dataloader = test_dataloader = dict(dataset=dataset)
# To test on CAMO or CHAMELEON instead, in the experiment config:
# test_dataloader = dict(dataset=dict(type='CAMODataset', data_root='data/camo'))  # img_dir/test
# test_dataloader = dict(dataset=dict(type='CHAMELEONDataset', data_root='data/chameleon'))  # img_dir/test
val_evaluator = test_evaluator = dict(type='SODMetric')  # S-measure, weighted F, mean E-measure, MAE
