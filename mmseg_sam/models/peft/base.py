"""The PEFT registry, the method interface and the injector that applies methods.

A PEFT method is a strategy object built from a config (``dict(type='LoRA', rank=4)``)
that modifies a backbone in place: it wraps matching layers or adds modules, and
returns the parameters it made trainable. New methods are new files that register a
:class:`BasePEFTMethod` subclass in :data:`PEFT_METHODS`; the backbone does not change.
"""

import re
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmengine.logging import MMLogger
from mmengine.registry import Registry
from torch import nn

from ..backbones.base import BACKBONE_PLACES, SAMBackboneBase, SAMBackboneBlock

__all__ = [
    'PEFT_METHODS',
    'BasePEFTMethod',
    'BlockPlaceMethod',
    'PEFTLayerMixin',
    'PEFTReport',
    'block_index',
    'block_prefix',
    'check_places',
    'inject_peft',
    'match_modules',
    'merge_peft',
    'needed_places',
    'place_path',
    'refused_places',
    'why_absent',
]

PEFT_METHODS = Registry('peft method', locations=['mmseg_sam.models.peft'])


class PEFTLayerMixin:
    """Mixin for modules created by a PEFT method: what other code may know about them.

    Other methods, the engine and the tools ask a layer through these declared
    capabilities, never by importing a method's class:

    - :meth:`conditional_parameters`: parameters a training step may leave without a
      gradient (DDP then needs ``find_unused_parameters``);
    - ``needs_spatial_tokens``: the layer's input must be the spatial token map
      (B, H, W, C) of its block, so token prompts must not pass through it;
    - ``adds_tokens``: the module puts extra (prompt) tokens into the sequence that
      its sub-layers see;
    - :meth:`bottleneck_slots`: low-rank bottlenecks a cross-block method may act on;
    - ``merge()`` / ``unmerge()`` where the update is linear in the input.

    Auxiliary losses (Conv-LoRA's load balancing) do not go through the layer: it
    reports them with :func:`~mmseg_sam.models.peft.aux_losses.report_aux_loss`.
    """

    needs_spatial_tokens: bool = False
    adds_tokens: bool = False

    def conditional_parameters(self) -> list[str]:
        """Names (relative to this module) of trainable parameters a step may leave unused."""
        return []

    def bottleneck_slots(self) -> dict[str, int]:
        """Named low-rank bottlenecks of this layer and their widths (none by default).

        A layer with slots (LoRA's A -> B, an adapter's down -> up) applies
        ``self.slot_transforms[name]`` (an ``nn.ModuleDict``, empty = identity) to the
        output of the down-projection of slot ``name``, before anything else. Methods
        that act across blocks (COBOT) install their transforms there. A transform that
        is linear exposes ``matrix()`` (``transform(z) == z @ matrix().T``) so that
        mergeable layers stay mergeable.
        """
        return {}


class BasePEFTMethod(metaclass=ABCMeta):
    """A parameter-efficient fine-tuning method applied to a backbone in place.

    ``mergeable`` says whether the method's update is linear in the layer input, so
    that :func:`merge_peft` can fold it into the frozen weights. ``needs_places`` names
    the backbone-level places (of
    :data:`~mmseg_sam.models.backbones.base.BACKBONE_PLACES`) the method fills:
    :func:`inject_peft` refuses a backbone that does not offer one, quoting the family's
    reason (its ``absent_places``), and :func:`refused_places` tells which families
    refuse a config without building anything.
    """

    mergeable: bool = False
    needs_places: tuple[str, ...] = ()

    @abstractmethod
    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Modify ``model`` and return the parameters to train, by qualified name.

        Must raise ``ValueError`` when nothing in ``model`` matched.
        """

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items() if not k.startswith('_'))
        return f'{type(self).__name__}({args})'


class BlockPlaceMethod(BasePEFTMethod):
    """Template of the methods that put one module at named places of every selected block.

    The template owns what every such method does: selecting the blocks (``blocks``,
    one rule), checking that each block offers the places, refusing a place that a
    PEFT layer already holds (naming it), checking every place before changing any,
    putting the built modules in, and reporting their new parameters (the ones they do
    not share with the module they replace, whose weights they keep). A method states
    only what differs:

    - :meth:`places`: the places it fills in each block, e.g. ``{'attn.qkv': ['q', 'v']}``
      (a sub-module path, or a block place such as ``'mlp_parallel'``) with what it
      needs to know to build there;
    - :meth:`check_place` (optional): refuse a place it cannot adapt, saying why;
    - :meth:`build`: the module for one place.

    Subclasses set ``self.blocks`` (None: every block).
    """

    blocks: tuple[int, ...] | None = None

    @abstractmethod
    def places(self) -> dict[str, Any]:
        """Place (path inside a block) -> what :meth:`build` needs for it."""

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        """Raise ``ValueError`` if the module ``current`` at ``where`` cannot be adapted."""

    @abstractmethod
    def build(self, place: str, spec: Any, current: nn.Module | None, block: nn.Module) -> nn.Module:
        """The module to put at ``place`` of ``block``, where ``current`` is now."""

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        method = type(self).__name__
        places = self.places()
        roots = sorted({place.split('.')[0] for place in places})
        plan = []
        for block_name, block in select_blocks(model, method, self.blocks, places=roots):
            for place, spec in places.items():
                path = place_path(block, place)
                where = f'{block_name}.{path}'
                try:
                    current = (
                        block.get_submodule(path) if getattr(block, path.split('.')[0]) is not None else None
                    )
                except AttributeError as err:
                    raise ValueError(
                        f'{method} needs {where}, which {type(block).__name__} does not have'
                    ) from err
                if isinstance(current, PEFTLayerMixin):
                    raise ValueError(f'{where} is already adapted by {type(current).__name__}')
                self.check_place(where, place, current, block)
                plan.append((where, block, place, path, spec, current))
        params: dict[str, nn.Parameter] = {}
        for where, block, place, path, spec, current in plan:  # every place checked: now change the model
            new = self.build(place, spec, current, block)
            replace_module(block, path, new)
            kept = {id(p) for p in current.parameters()} if current is not None else set()
            params.update({f'{where}.{name}': p for name, p in new.named_parameters() if id(p) not in kept})
        return params


@dataclass
class PEFTReport:
    """What the injector did: trainable parameter counts per method and their names."""

    trainable: dict[str, int] = field(default_factory=dict)
    parameter_names: dict[str, list[str]] = field(default_factory=dict)
    mergeable: dict[str, bool] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.trainable.values())


def match_modules(
    model: nn.Module, pattern: str, module_type: type[nn.Module] | tuple[type[nn.Module], ...]
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, module)`` for modules of ``module_type`` whose name fully matches."""
    regex = re.compile(pattern)
    for name, module in model.named_modules():
        if isinstance(module, module_type) and regex.fullmatch(name):
            yield name, module


def block_pattern(blocks: Sequence[int] | None) -> str:
    """Regex for the block indices to adapt (all blocks when None)."""
    if blocks is None:
        return r'\d+'
    return '(?:' + '|'.join(str(int(i)) for i in blocks) + ')'


def block_prefix(model: nn.Module) -> str:
    """Where a backbone keeps its blocks: ``blocks.<i>`` (SAMViT) or e.g. ``trunk.blocks.<i>``.

    A :class:`~mmseg_sam.models.backbones.base.SAMBackboneBase` declares it
    (``peft_block_prefix``; SAM2Hiera: ``'trunk.'``). Any other module (segment_anything's
    ``ImageEncoderViT``, as the benchmark's reference rows adapt it) is read with SAM's
    layout: top-level ``blocks``.
    """
    return model.peft_block_prefix if isinstance(model, SAMBackboneBase) else ''


def block_index(name: str) -> int:
    """The index ``i`` of a module name ``[prefix.]blocks.<i>[...]``."""
    found = re.search(r'(?:^|\.)blocks\.(\d+)(?:\.|$)', name)
    if found is None:
        raise ValueError(f'{name!r} is not inside a block (blocks.<i>)')
    return int(found.group(1))


def check_places(method: BasePEFTMethod, model: nn.Module) -> None:
    """Raise ``ValueError`` when ``model`` does not offer a backbone-level place ``method`` needs.

    The message names the method, the place, the backbone families that offer it and the
    model's reason for lacking it (its ``absent_places``).
    """
    if isinstance(model, SAMBackboneBase):
        offered = tuple(model.backbone_places)
    else:  # a plain encoder (segment_anything's): the places it has as attributes
        offered = tuple(place for place in BACKBONE_PLACES if hasattr(model, place))
    for place in method.needs_places:
        if place not in offered:
            raise ValueError(
                f'{type(method).__name__} needs a backbone with {"an" if place[0] in "aeiou" else "a"} {place} place '
                f'({", ".join(_families_offering(place)) or "no registered family"}), got '
                f'{type(model).__name__}' + why_absent(model, place)
            )


def _families_offering(place: str) -> list[str]:
    from mmseg.registry import MODELS  # the backbones register there

    return sorted(
        name
        for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and issubclass(cls, SAMBackboneBase) and place in cls.backbone_places
    )


def needed_places(cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> tuple[str, ...]:
    """The backbone-level places a ``backbone.peft`` config's methods need, in order (none for None)."""
    if not cfg:
        return ()
    cfgs = [cfg] if isinstance(cfg, Mapping) else list(cfg)
    places: list[str] = []
    for method_cfg in cfgs:
        for place in build_peft_method(method_cfg).needs_places:
            if place not in places:
                places.append(place)
    return tuple(places)


def refused_places(
    backbone: SAMBackboneBase | type[SAMBackboneBase],
    cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> dict[str, str]:
    """The places a ``peft`` config needs that ``backbone`` (a family or a model) lacks, with its reasons.

    Empty when the family takes the config; otherwise building it raises the
    :func:`check_places` refusal for the first of them.
    """
    absent = backbone.absent_places
    return {place: absent[place] for place in needed_places(cfg) if place in absent}


def why_absent(model: nn.Module, place: str) -> str:
    """``': <reason>'`` when a backbone explains why it lacks a PEFT place (its ``absent_places``), else ``''``."""
    why = model.absent_places.get(place) if isinstance(model, SAMBackboneBase) else None
    return f': {why}' if why else ''


def place_path(block: nn.Module, place: str) -> str:
    """The path inside ``block`` of a protocol place such as ``'mlp.lin1'``.

    Methods name places by the protocol's names (SAMBlock's: ``attn.qkv``,
    ``attn.proj``, ``mlp.lin1``, ``mlp.lin2``, ``norm1``, ``norm2``, ``attn_adapter``,
    ...). A :class:`~mmseg_sam.models.backbones.base.SAMBackboneBlock` whose modules keep
    other names, so that its official checkpoint keys stay unchanged, maps protocol
    names to its own in ``place_paths`` (SAM 2's Hiera block: ``{'mlp.lin1':
    'mlp.layers.0', ...}``); any other block (segment_anything's ``Block``) uses the
    protocol's names.
    """
    return block.place_path(place) if isinstance(block, SAMBackboneBlock) else place


def check_blocks_matched(method: str, blocks: Sequence[int] | None, names: Iterable[str], what: str) -> None:
    """Raise if a requested block index has no match among module names ``[prefix.]blocks.<i>...``.

    Args:
        method: the method name, for the message.
        blocks: the requested indices (None: all blocks, nothing to check).
        names: qualified names of the matched modules.
        what: what was looked for, for the message (e.g. ``'SAM Block'``).
    """
    if blocks is None:
        return
    missing = sorted(set(blocks) - {block_index(name) for name in names})
    if missing:
        raise ValueError(f'{method} blocks {missing} matched no {what}')


def select_blocks(
    model: nn.Module, method: str, blocks: Sequence[int] | None, places: Iterable[str] = ()
) -> list[tuple[str, nn.Module]]:
    """The backbone blocks ``[prefix.]blocks.<i>`` for the requested indices (all if None).

    Args:
        model: the backbone.
        method: the method's name, for messages.
        blocks: requested indices, or None.
        places: block places the method will fill (e.g. ``'mlp_parallel'``); every
            selected block must offer them.

    Raises:
        ValueError: no block matched, a requested index matched none, or a block does
            not offer a place (naming the block type and the place).
    """
    pattern = re.compile(rf'{re.escape(block_prefix(model))}blocks\.{block_pattern(blocks)}')
    matches = [(name, module) for name, module in model.named_modules() if pattern.fullmatch(name)]
    if not matches:
        raise ValueError(f'{method} found no block matching {pattern.pattern!r} (blocks={blocks})')
    check_blocks_matched(method, blocks, (name for name, _ in matches), 'block')
    for place in places:
        for name, block in matches:
            if not hasattr(block, place):
                raise ValueError(
                    f'{method} needs the place {place!r} of each block, and {name} '
                    f'({type(block).__name__}) does not offer it'
                )
    return matches


def set_place(owner: nn.Module, place: str, module: nn.Module, where: str) -> None:
    """Fill an empty PEFT place (``nn.Identity`` or None) of a block or backbone with ``module``.

    Raises:
        ValueError: ``owner`` has no such place, or another module already fills it.
    """
    if not hasattr(owner, place):
        raise ValueError(f'{type(owner).__name__} offers no PEFT place {place!r} ({where})')
    current = getattr(owner, place)
    if current is not None and not isinstance(current, nn.Identity):
        raise ValueError(f'{where} is already adapted by {type(current).__name__}')
    setattr(owner, place, module)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` inside ``model``."""
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def build_peft_method(cfg: Mapping[str, Any]) -> BasePEFTMethod:
    """Instantiate a registered method from its config.

    The class is looked up directly (not through ``Registry.build``), so building under
    mmseg's default scope does not warn about the ``mmseg_sam`` registry scope.
    """
    args = dict(cfg)
    method_type = args.pop('type')
    method_cls = PEFT_METHODS.get(method_type)
    if method_cls is None:
        raise ValueError(f'unknown PEFT type {method_type!r}; registered: {sorted(PEFT_METHODS.module_dict)}')
    return method_cls(**args)


def inject_peft(model: nn.Module, cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> PEFTReport:
    """Build the configured PEFT method(s) and apply them to ``model``.

    Args:
        model: the backbone, with pretrained weights already loaded.
        cfg: one method config or a list of them, applied in order.

    Returns:
        PEFTReport: trainable parameter counts per method (keyed ``Type`` or
        ``Type#i`` when a type repeats).
    """
    if isinstance(cfg, str) or not isinstance(cfg, (Mapping, Sequence)):
        raise TypeError(
            f"peft must be a dict such as dict(type='LoRA', rank=4) (or a list of them), got {cfg!r}"
            + (f': write peft=dict(type={cfg!r})' if isinstance(cfg, str) else '')
        )
    cfgs = [cfg] if isinstance(cfg, Mapping) else list(cfg)
    report = PEFTReport()
    for i, method_cfg in enumerate(cfgs):
        if not isinstance(method_cfg, Mapping) or 'type' not in method_cfg:
            raise TypeError(f'a PEFT config must be a dict with a "type" key, got {method_cfg!r}')
        method_type = method_cfg['type']
        method = build_peft_method(method_cfg)  # raises on an unknown type
        check_places(method, model)
        params = method.inject(model)
        if not params:
            raise ValueError(f'{method!r} made no parameter trainable')
        for p in params.values():
            p.requires_grad_(True)
        key = method_type if method_type not in report.trainable else f'{method_type}#{i}'
        report.trainable[key] = sum(p.numel() for p in params.values())
        report.parameter_names[key] = sorted(params)
        report.mergeable[key] = bool(method.mergeable)
        MMLogger.get_current_instance().info(
            f'PEFT {method!r}: {report.trainable[key]:,} trainable parameters in {len(params)} tensors'
        )
    return report


def mergeable_methods() -> dict[str, bool | None]:
    """Every registered method's ``mergeable`` declaration (test-only ``_`` names left out).

    Returns:
        dict: method name -> True (the class declares ``mergeable = True``), False, or None
        where ``mergeable`` is a property of the instance (COBOT: when its host merges).
    """
    out = {}
    for name, cls in sorted(PEFT_METHODS.module_dict.items(), key=lambda kv: kv[0].lower()):
        if not name.startswith('_'):
            out[name] = None if isinstance(cls.mergeable, property) else bool(cls.mergeable)
    return out


def mergeable_phrase(mergeable: bool = True) -> str:
    """The methods that merge (or, ``mergeable=False``, that do not) as docs and tools list them.

    ``'BitFit, DoRA, LoRA, SSF, COBOT on one of those'``: derived from
    :func:`mergeable_methods`; ``tests/models/test_peft_mergeable.py`` checks every list in
    the docs and the tools' help against it.
    """
    declared = mergeable_methods()
    names = [name for name, ok in declared.items() if ok is mergeable]
    names += [f'{name} on one of those' for name, ok in declared.items() if ok is None]
    return ', '.join(names)


def merge_peft(backbone: nn.Module) -> int:
    """Fold every PEFT update of ``backbone`` into its frozen weights, in place.

    Mergeable (``BasePEFTMethod.mergeable``): BitFit, DoRA, LoRA, SSF, COBOT on one of those.

    Raises:
        ValueError: a method of the backbone is not linear in its input (Adapter,
            AdaptFormer, ConvLoRA, LST, SAMAdapter, VPT, COBOT on one of those), naming it.

    Returns:
        int: the number of layers merged.
    """
    report = backbone.peft_report if isinstance(backbone, SAMBackboneBase) else None
    if report is None or not report.trainable:
        raise ValueError('the backbone has no PEFT method to merge')
    refused = [name for name, ok in report.mergeable.items() if not ok]
    if refused:
        raise ValueError(
            f'cannot merge {refused}: only methods linear in the layer input merge exactly '
            f'({mergeable_phrase()})'
        )
    merged = 0
    for module in backbone.modules():
        if isinstance(module, PEFTLayerMixin) and hasattr(module, 'merge'):
            module.merge()
            merged += 1
    return merged


def check_blocks(method: str, blocks: Sequence[int] | None) -> tuple[int, ...] | None:
    """The one rule for a method's ``blocks``: None (every block) or distinct block indices.

    Returns:
        The indices as a tuple, or None.

    Raises:
        ValueError: not None and not a non-empty list / tuple of distinct non-negative
            ints (bools and strings are refused), naming the value.
    """
    if blocks is None:
        return None
    values = tuple(blocks) if isinstance(blocks, (list, tuple)) else None
    if (
        not values
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in values)
        or len(set(values)) != len(values)
    ):
        raise ValueError(
            f'{method} blocks must be None (every block) or a non-empty list of distinct non-negative ints, '
            f'got {blocks!r}'
        )
    return values


def check_targets(method: str, targets: str | Sequence[str], allowed: Iterable[str]) -> tuple[str, ...]:
    """The one rule for a method's ``targets``: one name or a non-empty list of distinct allowed names.

    Raises:
        ValueError: empty, repeated or unknown names (the allowed ones are listed).
    """
    values = (targets,) if isinstance(targets, str) else tuple(targets)
    if not values:
        raise ValueError(f'{method} targets must name at least one of {list(allowed)}')
    repeated = sorted({t for t in values if values.count(t) > 1})
    if repeated:
        raise ValueError(f'{method} targets name {repeated} more than once: {list(values)}')
    check_choices(f'{method} targets', values, allowed)
    return values


def check_positive_int(method: str, name: str, value: int) -> int:
    """The one rule for ranks and widths: a positive int (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{method} {name} must be a positive int, got {value!r}')
    return value


def check_choices(name: str, values: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the values of ``name`` that are not ``allowed``."""
    allowed = list(allowed)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f'{name} {bad} not allowed; choose from {allowed}')
