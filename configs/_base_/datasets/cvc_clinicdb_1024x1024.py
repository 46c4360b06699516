# CVC-ClinicDB polyps alone, PraNet split: train 550, test 62 frames; the test split
# validates. (polyp_1024x1024.py is the papers' protocol: Kvasir + CVC-ClinicDB.) Convert first:
#   python tools/dataset_converters/cvc_clinicdb.py /path/to/CVC-ClinicDB -o data/cvc_clinicdb
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='CVCClinicDBDataset', data_root='data/cvc_clinicdb')  # read by every loader
train_dataloader = val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(type='SODMetric')  # S-measure, weighted F, mean E-measure, MAE
