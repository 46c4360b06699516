from .peft_optim_wrapper_constructor import PEFTOptimWrapperConstructor
from .portable_amp_optim_wrapper import PortableAmpOptimWrapper

__all__ = ['PEFTOptimWrapperConstructor', 'PortableAmpOptimWrapper']
