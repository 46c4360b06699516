# Polyps, the field's protocol (PraNet; Conv-LoRA): train on the PraNet split's 900 Kvasir-SEG
# + 550 CVC-ClinicDB images, test on Kvasir-test (100), which also validates, and
# CVC-ClinicDB-test (62). Convert both releases first:
#   python tools/dataset_converters/kvasir_seg.py /path/to/Kvasir-SEG -o data/kvasir_seg
#   python tools/dataset_converters/cvc_clinicdb.py /path/to/CVC-ClinicDB -o data/cvc_clinicdb
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='KvasirSEGDataset', data_root='data/kvasir_seg')  # every loader; training adds CVC
train_split = _base_.train_dataloader.dataset  # the train split's prefixes and pipeline
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(train_split, **dataset),
            dict(train_split, type='CVCClinicDBDataset', data_root='data/cvc_clinicdb'),
        ],
    )
)
val_dataloader = test_dataloader = dict(dataset=dataset)
# To test on CVC-ClinicDB instead, in the experiment config:
# test_dataloader = dict(dataset=dict(type='CVCClinicDBDataset', data_root='data/cvc_clinicdb'))
val_evaluator = test_evaluator = dict(type='SODMetric')  # S-measure, weighted F, mean E-measure, MAE
