"""The backbone contract: what a SAM encoder family offers the PEFT methods and the segmentors.

A family (SAMViT, SAM2Hiera) subclasses :class:`SAMBackboneBase` and its blocks mix in
:class:`SAMBackboneBlock`. The family builds its modules under its official checkpoint
names, declares the contract attributes and calls :meth:`SAMBackboneBase.setup` in its
``__init__``, which owns the construction order: check the contract,
load the checkpoint strictly, freeze, create the empty backbone-level places, inject
PEFT, report. A family that leaves a contract attribute out, or never calls
:meth:`~SAMBackboneBase.setup`, fails at construction with the names of what is missing.

This module imports nothing of ``mmseg_sam.models.peft`` at import time: the PEFT
methods read this contract, and the backbones call the injector only while they are
constructed, so the two packages do not import each other.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from mmengine.logging import MMLogger
from torch import nn

from ...utils.checkpoint import load_strict

if TYPE_CHECKING:
    from ..peft import PEFTReport

__all__ = [
    'BACKBONE_CONTRACT',
    'BACKBONE_PLACES',
    'BLOCK_CONTRACT',
    'BLOCK_PLACES',
    'FAMILY_CONTRACT',
    'SAMBackboneBase',
    'SAMBackboneBlock',
    'blocks_with_cp',
    'registered_families',
]

# Backbone-level PEFT places the methods know: prompts added to block inputs (SAM-Adapter)
# and a side network whose output joins the neck input (LST). A family offers each one
# (``backbone_places``) or says why it cannot (``absent_places``).
BACKBONE_PLACES = ('input_prompts', 'side_network')
# Places every block offers: serial modules on the attention and MLP outputs (``nn.Identity``
# while empty) and a branch beside the MLP (None while empty).
BLOCK_PLACES = ('attn_adapter', 'mlp_adapter', 'mlp_parallel')
# Contract attributes a backbone has once constructed (class attributes, properties or
# attributes set in ``__init__``), in the order they are reported when missing.
BACKBONE_CONTRACT = (
    'blocks',
    'peft_block_prefix',
    'backbone_places',
    'absent_places',
    'size_divisor',
    'strides',
    'with_cp',
    'embed_dims',
    'out_channels',
)
BLOCK_CONTRACT = ('place_paths', 'with_cp', 'window_size', *BLOCK_PLACES)
# Class attributes that describe the family to the tools (parameter counts, exports, reports),
# so that they take a new family without naming it.
FAMILY_CONTRACT = ('family', 'family_title', 'arch_zoo', 'arch_labels', 'report_archs', 'decode_head')


def blocks_with_cp(blocks: Sequence[nn.Module]) -> bool | str:
    """The ``with_cp`` the blocks share, or ``'mixed'`` when they were set to different ones."""
    levels = {block.with_cp for block in blocks}
    return levels.pop() if len(levels) == 1 else 'mixed'


def _missing(obj: object, names: Sequence[str]) -> list[str]:
    return [name for name in names if not hasattr(obj, name)]


class SAMBackboneBlock:
    """Mixin of a backbone's blocks: the block places the PEFT methods act at.

    A block offers the places of :data:`BLOCK_PLACES` (``attn_adapter``, ``mlp_adapter``,
    ``mlp_parallel``), a ``with_cp`` and a ``window_size`` (0 in global blocks), and its
    sub-modules under the protocol's names (``attn.qkv``, ``attn.proj``, ``mlp.lin1``,
    ``mlp.lin2``, ``norm1``, ``norm2``). A block whose modules keep other names, so that
    its official checkpoint keys stay unchanged, maps the protocol's names to its own in
    :attr:`place_paths` (SAM 2's Hiera block: ``{'mlp.lin1': 'mlp.layers.0', ...}``).
    """

    place_paths: ClassVar[Mapping[str, str]] = {}

    def place_path(self, place: str) -> str:
        """The path inside this block of a protocol place such as ``'mlp.lin1'``."""
        return self.place_paths.get(place, place)


class SAMBackboneBase(nn.Module):
    """Base of the SAM image-encoder families: the contract and the construction order.

    A family states (class attributes, properties or attributes set before :meth:`setup`):

    - ``blocks``: the ``nn.ModuleList`` of :class:`SAMBackboneBlock` s that PEFT methods
      adapt, found at ``<peft_block_prefix>blocks.<i>``;
    - ``peft_block_prefix``: ``''`` (SAMViT: ``blocks.<i>``) or e.g. ``'trunk.'``;
    - ``backbone_places``: the backbone-level places of :data:`BACKBONE_PLACES` it offers
      (its forward runs them), and ``absent_places``: why it lacks each other one (named
      in the refusal of the methods that need it);
    - ``size_divisor``: what input sides must be multiples of; ``strides``: the stride
      of each returned map, in order;
    - ``with_cp``: the recomputation level of the blocks (the property here; the family
      gives :meth:`check_with_cp`, the levels it supports);
    - ``embed_dims``, ``out_channels``;
    - its patch embedding at ``<peft_block_prefix>patch_embed.proj``, an ``nn.Conv2d``
      (VPT initialises its prompts from it, BitFit trains its bias);
    - :meth:`load_pretrained`: the checkpoint's state dict under this module's keys;
    - for the tools (:data:`FAMILY_CONTRACT`, class attributes): ``family``, the name tools
      take (``count_parameters.py --backbone sam2``); ``family_title``, its name in
      reports; ``arch_zoo``, its named sizes; ``arch_labels``, their column labels;
      ``report_archs``, the sizes tables show by default; ``decode_head``, the registered
      name of its prompt-free decode head;
    - optionally :meth:`official_checkpoint`: the model in the family's official
      checkpoint format (``tools/model_converters/export_sam.py``).

    Its ``__init__`` builds the modules, then calls :meth:`setup`. Construction fails,
    naming them, when a contract attribute is missing, a block is not a
    :class:`SAMBackboneBlock` or lacks a block contract attribute, the patch embedding is
    missing, the backbone-level places are not accounted for, or :meth:`setup` was not
    called.
    """

    family: ClassVar[str]
    family_title: ClassVar[str]
    arch_zoo: ClassVar[Mapping[str, Mapping[str, Any]]]
    arch_labels: ClassVar[Mapping[str, str]]
    report_archs: ClassVar[tuple[str, ...]]
    decode_head: ClassVar[str]
    peft_block_prefix: ClassVar[str]
    backbone_places: ClassVar[tuple[str, ...]]
    absent_places: ClassVar[Mapping[str, str]]
    checkpoint: str | None
    frozen: bool
    peft_report: 'PEFTReport'

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None or getattr(init, '_checks_contract', False):
            return

        def checked_init(self: 'SAMBackboneBase', *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self).__init__ is checked_init:  # the most derived __init__ has run
                self._check_setup_ran()

        checked_init._checks_contract = True  # type: ignore[attr-defined]
        checked_init.__doc__, checked_init.__name__, checked_init.__qualname__ = (
            init.__doc__,
            init.__name__,
            init.__qualname__,
        )
        checked_init.__wrapped__ = init  # type: ignore[attr-defined]  (inspect.signature reads it)
        cls.__init__ = checked_init

    @staticmethod
    def check_with_cp(with_cp: object) -> bool | str:
        """Return ``with_cp`` if the family's blocks support it, else raise naming it."""
        raise NotImplementedError

    @property
    def with_cp(self) -> bool | str:
        """The recomputation level of the blocks.

        Setting it sets every block's (checked by :meth:`check_with_cp`); reading it
        gives that level, or ``'mixed'`` when blocks were set one by one to different levels.
        """
        return blocks_with_cp(self.blocks)

    @with_cp.setter
    def with_cp(self, with_cp: bool | str) -> None:
        with_cp = self.check_with_cp(with_cp)
        for block in self.blocks:
            block.with_cp = with_cp

    def load_pretrained(self, checkpoint: str) -> dict[str, Any]:
        """The image-encoder state dict of ``checkpoint`` under this module's keys."""
        raise NotImplementedError

    def official_checkpoint(
        self, model: nn.Module, original: Mapping[str, Any], source: str, original_decoder: bool
    ) -> tuple[Any, dict[str, Any]]:
        """What ``torch.save`` writes for ``model`` in the family's official checkpoint format.

        Args:
            model: the segmentor (this backbone, PEFT updates merged, and its decode head).
            original: the original checkpoint as loaded (it supplies what the model lacks).
            source: where ``original`` was read from (named in messages).
            original_decoder: keep the original prompt encoder and mask decoder.

        Returns:
            tuple: the object to save, and a dict with ``summary`` (what was written from
            where, one line), ``resized`` (position tables resized back) and ``decoder``
            (decoder parts written from the head).
        """
        raise NotImplementedError(
            f'{type(self).__name__} has no official checkpoint format to export to (official_checkpoint)'
        )

    def check_contract(self) -> None:
        """Raise ``TypeError`` naming every contract attribute the backbone or its blocks lack."""
        name = type(self).__name__
        for i, block in enumerate(
            self.blocks if hasattr(self, 'blocks') else ()
        ):  # first: with_cp reads them
            where = f'blocks.{i} ({type(block).__name__})'
            if not isinstance(block, SAMBackboneBlock):
                raise TypeError(f'{name} block {where} is not a SAMBackboneBlock')
            missing = _missing(block, BLOCK_CONTRACT)
            if missing:
                raise TypeError(
                    f'{name} block {where} does not declare the block contract attributes {missing}'
                )
            unresolved = [path for path in block.place_paths.values() if not _has_submodule(block, path)]
            if unresolved:
                raise TypeError(f'{name} block {where} place_paths name no sub-module: {unresolved}')
        missing = _missing(self, (*BACKBONE_CONTRACT, *FAMILY_CONTRACT))
        if type(self).check_with_cp is SAMBackboneBase.check_with_cp:
            missing.append('check_with_cp')
        if type(self).load_pretrained is SAMBackboneBase.load_pretrained:
            missing.append('load_pretrained')
        if missing:
            raise TypeError(
                f'{name} does not declare the backbone contract attributes {missing} '
                '(see mmseg_sam.models.backbones.base.SAMBackboneBase)'
            )
        patch_embed = f'{self.peft_block_prefix}patch_embed.proj'
        if not isinstance(_submodule(self, patch_embed), nn.Conv2d):
            raise TypeError(
                f'{name} has no nn.Conv2d patch embedding at {patch_embed} (<peft_block_prefix>patch_embed.proj): '
                'VPT initialises its prompts from it and BitFit trains its bias'
            )
        offered, absent = set(self.backbone_places), set(self.absent_places)
        unknown = sorted((offered | absent) - set(BACKBONE_PLACES))
        both = sorted(offered & absent)
        unaccounted = [p for p in BACKBONE_PLACES if p not in offered | absent]
        if unknown or both or unaccounted:
            raise TypeError(
                f'{name} must offer each backbone place of {list(BACKBONE_PLACES)} (backbone_places) or '
                f'say why not (absent_places): unknown {unknown}, in both {both}, in neither {unaccounted}'
            )

    def setup(
        self,
        checkpoint: str | None,
        frozen: bool,
        peft: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    ) -> None:
        """The construction steps after the modules are built, in their one order.

        Check the contract, load ``checkpoint`` strictly (before any PEFT module wraps the
        originals), freeze every pretrained parameter when ``frozen``, create the empty
        backbone-level places (None), inject ``peft`` and keep its report in
        ``peft_report``.
        """
        from ..peft import PEFTReport, inject_peft  # the PEFT methods import this contract

        self.check_contract()
        self.checkpoint = checkpoint  # frozen weights come from here (see SAMCheckpointHook)
        if checkpoint is not None:
            load_strict(self, self.load_pretrained(checkpoint), source=str(checkpoint))
            MMLogger.get_current_instance().info(
                f'{type(self).__name__}: loaded image encoder weights from {checkpoint}'
            )
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
        for place in self.backbone_places:
            setattr(self, place, None)  # empty until a PEFT method fills it
        self.peft_report = inject_peft(self, peft) if peft else PEFTReport()

    def _check_setup_ran(self) -> None:
        if 'peft_report' not in vars(self):
            raise TypeError(
                f'{type(self).__name__}.__init__ must call self.setup(checkpoint, frozen, peft) '
                'after building its modules (load, freeze, inject PEFT)'
            )


def registered_families() -> dict[str, type[SAMBackboneBase]]:
    """The registered backbone families by their ``family`` name (``'sam'``, ``'sam2'``), as tools list them."""
    from mmseg.registry import MODELS

    found: dict[str, type[SAMBackboneBase]] = {}
    for cls in MODELS.module_dict.values():
        if isinstance(cls, type) and issubclass(cls, SAMBackboneBase) and 'family' in vars(cls):
            found.setdefault(cls.family, cls)
    return dict(sorted(found.items()))


def _submodule(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _has_submodule(module: nn.Module, path: str) -> bool:
    return _submodule(module, path) is not None
