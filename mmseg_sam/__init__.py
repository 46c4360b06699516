"""mmseg_sam: fine-tune Segment Anything for semantic segmentation in MMSegmentation 1.x.

Importing the package registers its models, datasets, metrics and hooks in mmseg's registries
(configs do it through ``custom_imports=dict(imports=['mmseg_sam'])``) and allows
torch.load(weights_only=True) to read the checkpoints MMEngine writes.
"""

from .utils.safe_globals import allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()

from . import apis, datasets, engine, evaluation, models  # noqa: E402  (registration)
from .version import __version__  # noqa: E402

__all__ = ['__version__', 'apis', 'datasets', 'engine', 'evaluation', 'models']
