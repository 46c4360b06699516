# ISIC 2017 skin lesions, trained as the Conv-LoRA reference: 30 epochs of 2000 images
# (task 1 train) at the effective batch of 4, lr 1e-4.
# Metric: foreground IoU per image (BinaryIoUMetric).
# Method configs (configs/<method>/) inherit this file and add only their PEFT; the
# encoder (SAM ViT-H, as the reference) is named only by the model base.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/isic2017_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_epochs.py',
]
train_cfg = _base_.epoch_schedules.isic2017.train_cfg  # epochs as iterations
default_hooks = _base_.epoch_schedules.isic2017.default_hooks
# PraNet's structure loss with the reference code's plain-mean BCE term (see StructureLoss):
# the reference trains every binary benchmark except shadows with it.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='StructureLoss', weighted_bce=False)))
