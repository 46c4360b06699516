# Camouflaged objects, trained as the Conv-LoRA reference: 20 epochs of 4040 images
# (COD10K-train 3040 + CAMO-train 1000) at the effective batch of 4, lr 1e-4.
# Metric: S-measure, weighted F-measure, mean E-measure and MAE (SODMetric).
# Method configs (configs/<method>/) inherit this file and add only their PEFT; the
# encoder (SAM ViT-H, as the reference) is named only by the model base.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/camouflage_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_epochs.py',
]
train_cfg = _base_.epoch_schedules.camouflage.train_cfg  # epochs as iterations
default_hooks = _base_.epoch_schedules.camouflage.default_hooks
# PraNet's structure loss with the reference code's plain-mean BCE term (see StructureLoss):
# the reference trains every binary benchmark except shadows with it.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='StructureLoss', weighted_bce=False)))
