# The reference optimisation (adamw-linear.py) for 20 epochs; a benchmark base converts
# epochs to iterations from its number of training images.
_base_ = ['./adamw-linear.py']
epochs = 20
