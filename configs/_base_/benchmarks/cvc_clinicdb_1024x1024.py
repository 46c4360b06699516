# CVC-ClinicDB polyps alone, trained as the Conv-LoRA reference: 30 epochs of 550 images
# (PraNet split) at the effective batch of 4, lr 1e-4.
# Metric: S-measure, weighted F-measure, mean E-measure and MAE (SODMetric).
# An alternative to polyp_1024x1024.py (the papers' protocol); no method config uses it.
# Method configs (configs/<method>/) inherit this file and add only their PEFT; the
# encoder (SAM ViT-H, as the reference) is named only by the model base.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/cvc_clinicdb_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_epochs.py',
]
train_cfg = _base_.epoch_schedules.cvc_clinicdb.train_cfg  # epochs as iterations
default_hooks = _base_.epoch_schedules.cvc_clinicdb.default_hooks
# PraNet's structure loss with the reference code's plain-mean BCE term (see StructureLoss):
# the reference trains every binary benchmark except shadows with it.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='StructureLoss', weighted_bce=False)))
