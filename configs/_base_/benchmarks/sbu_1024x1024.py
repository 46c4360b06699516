# SBU shadows, trained as the Conv-LoRA reference: 10 epochs of 4089 images
# (SBU-train) at the effective batch of 4, lr 1e-4.
# Metric: balanced error rate per image (BERMetric).
# Method configs (configs/<method>/) inherit this file and add only their PEFT; the
# encoder (SAM ViT-H, as the reference) is named only by the model base.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/sbu_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_epochs.py',
]
train_cfg = _base_.epoch_schedules.sbu.train_cfg  # epochs as iterations
default_hooks = _base_.epoch_schedules.sbu.default_hooks
# Balanced BCE, the reference loss for shadows.
# Shadow when the probability exceeds 125/255: the shadow literature thresholds 8-bit maps at
# > 125, and BERMetric, tools/infer.py and --show-dir all use the head's threshold.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='BalancedBCELoss'), threshold=125 / 255))
