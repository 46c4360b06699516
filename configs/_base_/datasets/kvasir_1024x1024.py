# Kvasir-SEG polyps alone, PraNet split: train 900, test 100 images; the test split
# validates. (polyp_1024x1024.py is the papers' protocol: Kvasir + CVC-ClinicDB.) Convert first:
#   python tools/dataset_converters/kvasir_seg.py /path/to/Kvasir-SEG -o data/kvasir_seg
_base_ = ['./mmseg-layout_1024x1024.py']
dataset = dict(type='KvasirSEGDataset', data_root='data/kvasir_seg')  # read by every loader
train_dataloader = val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(type='SODMetric')  # S-measure, weighted F, mean E-measure, MAE
