# ISTD shadows (shadow schedule as SBU), trained as the Conv-LoRA reference: 10 epochs of 1330 images
# (ISTD-train) at the effective batch of 4, lr 1e-4.
# Metric: balanced error rate per image (BERMetric).
# Layering: model base (encoder size, checkpoint, head) + dataset + runtime + a schedule
# base in epochs; this file converts the epochs to iterations and sets the loss. Method
# configs (configs/<method>/) inherit it and add only their PEFT. The encoder (SAM ViT-H,
# as the reference) is named only by the model base in the first line below.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/istd_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_10e.py',
]
num_train_images = 1330
iters_per_epoch = -(-num_train_images // 4)  # ceil(N / 4): the last, smaller batch counts
# the scheduler's end defaults to max_iters (linear decay to 0 over the run); validation
# and a checkpoint once per epoch
train_cfg = dict(max_iters=iters_per_epoch * _base_.epochs, val_interval=iters_per_epoch)
default_hooks = dict(checkpoint=dict(interval=iters_per_epoch))
# Balanced BCE, the reference loss for shadows.
# Shadow when the probability exceeds 125/255: the shadow literature thresholds 8-bit maps at
# > 125, and BERMetric, tools/infer.py and --show-dir all use the head's threshold.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='BalancedBCELoss'), threshold=125 / 255))
