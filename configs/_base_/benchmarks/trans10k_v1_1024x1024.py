# Trans10K-v1 transparent objects (3 classes), trained as the Conv-LoRA reference: 30 epochs of 5000 images
# (train split) at the effective batch of 4, lr 1e-4.
# Metric: mIoU over the classes (IoUMetric).
# Layering: model base (encoder size, checkpoint, head) + dataset + runtime + a schedule
# base in epochs; this file converts the epochs to iterations and sets the loss. Method
# configs (configs/<method>/) inherit it and add only their PEFT. The encoder (SAM ViT-H,
# as the reference) is named only by the model base in the first line below.
_base_ = [
    '../models/sam-vit-h_mask-decoder-maskcls.py',
    '../datasets/trans10k_v1_1024x1024.py',
    '../default_runtime.py',
    '../schedules/adamw-linear_30e.py',
]
num_train_images = 5000
iters_per_epoch = -(-num_train_images // 4)  # ceil(N / 4): the last, smaller batch counts
# the scheduler's end defaults to max_iters (linear decay to 0 over the run); validation
# and a checkpoint once per epoch
train_cfg = dict(max_iters=iters_per_epoch * _base_.epochs, val_interval=iters_per_epoch)
default_hooks = dict(checkpoint=dict(interval=iters_per_epoch))
# Mask classification, the reference multi-class head and set loss (the loss takes
# the number of classes from the head).
model = dict(decode_head=dict(num_classes=3))  # background included
