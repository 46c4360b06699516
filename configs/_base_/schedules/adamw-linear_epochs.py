# The Conv-LoRA reference's optimisation (adamw-linear.py) for the length it trains each
# benchmark: a number of epochs of N training images at the effective batch of 4.
# MMEngine's IterBasedTrainLoop counts iterations, so each row becomes ceil(N / 4)
# iterations per epoch (the last, smaller batch counts) times the epochs, with validation
# and a checkpoint once per epoch; the learning rate reaches 0 at the last iteration.
# A benchmark base (configs/_base_/benchmarks/) takes its row, e.g.
#   train_cfg = _base_.epoch_schedules.sbu.train_cfg
#   default_hooks = _base_.epoch_schedules.sbu.default_hooks
_base_ = ['./adamw-linear.py']
epoch_schedules = {
    benchmark: dict(
        train_cfg=dict(max_iters=-(-num_images // 4) * epochs, val_interval=-(-num_images // 4)),
        default_hooks=dict(checkpoint=dict(interval=-(-num_images // 4))),
    )
    for benchmark, (num_images, epochs) in dict(
        # benchmark=(training images, epochs)
        camouflage=(3040 + 1000, 20),  # COD10K-train + CAMO-train
        sbu=(4089, 10),
        istd=(1330, 10),
        polyp=(900 + 550, 30),  # Kvasir-SEG + CVC-ClinicDB, PraNet split
        kvasir=(900, 30),
        cvc_clinicdb=(550, 30),
        isic2017=(2000, 30),
        leaf_disease=(498, 30),
        massachusetts_roads=(1108, 20),
        trans10k_v1=(5000, 30),
        trans10k_v2=(5000, 30),
    ).items()
}
