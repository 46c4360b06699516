"""A model's weights before a short training run, saved as its ``load_from``, to check what the run changed.

``tools/analysis_tools/gpu_report.py`` (its one-iteration training checks) and the tests
(the one-iteration ``tools/train.py`` runs of every PEFT preset) start from these and then
compare the run's checkpoint with :attr:`StartWeights.values`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from mmengine.config import Config
from mmseg.registry import MODELS

__all__ = ['StartWeights', 'save_start_weights']


@dataclass
class StartWeights:
    """A model saved as a training run's ``load_from``.

    Attributes:
        path: the saved ``dict(state_dict=...)``.
        values: every parameter's value, by name.
        trainable: names of the parameters that train.
        method: the trainable backbone parameters (the PEFT method's, or all under full fine-tuning).
    """

    path: Path
    values: dict[str, torch.Tensor]
    trainable: set[str]
    method: set[str]


def save_start_weights(config: str | Path, path: Path) -> StartWeights:
    """Build the model of ``config`` (seed 0) and save it to ``path`` for its ``load_from``.

    Zero-initialised trainable tensors (LoRA's B, adapters' up-projections) get noise first,
    so that every trainable tensor upstream of them gets a gradient in the first step.
    """
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.add_(0.05 * torch.randn_like(p))
    torch.save(dict(state_dict=model.state_dict()), path)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return StartWeights(
        path=Path(path),
        values={n: p.detach().clone() for n, p in model.named_parameters()},
        trainable=trainable,
        method={n for n in trainable if n.startswith('backbone.')},
    )
