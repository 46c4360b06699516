# Massachusetts roads, trained as the Conv-LoRA reference: 20 epochs of 1108 images
# (train tiles) at the effective batch of 4, lr 3e-4.
# Metric: foreground IoU per image (BinaryIoUMetric).
# Layering: model base (encoder size, checkpoint, head) + dataset + runtime + a schedule
# base in epochs; this file converts the epochs to iterations and sets the loss. Method
# configs (configs/<method>/) inherit it and add only their PEFT. The encoder (SAM ViT-H,
# as the reference) is named only by the model base in the first line below.
_base_ = [
    '../models/sam-vit-h_mask-decoder-binary.py',
    '../datasets/massachusetts_roads_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_20e.py',
]
num_train_images = 1108
iters_per_epoch = -(-num_train_images // 4)  # ceil(N / 4): the last, smaller batch counts
# the scheduler's end defaults to max_iters (linear decay to 0 over the run); validation
# and a checkpoint once per epoch
train_cfg = dict(max_iters=iters_per_epoch * _base_.epochs, val_interval=iters_per_epoch)
default_hooks = dict(checkpoint=dict(interval=iters_per_epoch))
optim_wrapper = dict(optimizer=dict(lr=3e-4))  # the reference rate for this benchmark
# PraNet's structure loss with the reference code's plain-mean BCE term (see StructureLoss):
# the reference trains every binary benchmark except shadows with it.
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='StructureLoss', weighted_bce=False)))
