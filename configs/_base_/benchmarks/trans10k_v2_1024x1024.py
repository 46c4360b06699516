# Trans10K-v2 transparent objects (12 classes), trained as the Conv-LoRA reference: 30 epochs of 5000 images
# (train split) at the effective batch of 4, lr 1e-4.
# Metric: mIoU over the classes (IoUMetric).
# Method configs (configs/<method>/) inherit this file and add only their PEFT; the
# encoder (SAM ViT-H, as the reference) is named only by the model base.
_base_ = [
    '../models/sam-vit-h_mask-decoder-maskcls.py',
    '../datasets/trans10k_v2_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_epochs.py',
]
train_cfg = _base_.epoch_schedules.trans10k_v2.train_cfg  # epochs as iterations
default_hooks = _base_.epoch_schedules.trans10k_v2.default_hooks
# Mask classification, the reference multi-class head and set loss (the loss takes
# the number of classes from the head).
model = dict(decode_head=dict(num_classes=12))  # background included
