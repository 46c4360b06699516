from .check import CheckSegSample

__all__ = ['CheckSegSample']
