# Massachusetts roads, trained as the Conv-LoRA reference: 20 epochs of 1108 images
# (train tiles) at the effective batch of 4, lr 3e-4.
# Metric: foreground IoU per image (BinaryIoUMetric).
# Method configs (configs/<method>/) inherit this file and add only their PEFT; the
# encoder (SAM ViT-H, as the reference) is named only by the model base.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/massachusetts_roads_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_epochs.py',
]
train_cfg = _base_.epoch_schedules.massachusetts_roads.train_cfg  # epochs as iterations
default_hooks = _base_.epoch_schedules.massachusetts_roads.default_hooks
optim_wrapper = dict(optimizer=dict(lr=3e-4))  # the reference rate for this benchmark
# PraNet's structure loss with the reference code's plain-mean BCE term (see StructureLoss):
# the reference trains every binary benchmark except shadows with it.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='StructureLoss', weighted_bce=False)))
