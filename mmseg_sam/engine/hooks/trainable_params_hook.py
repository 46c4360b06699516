"""Log trainable / total parameters per model component when training starts."""

from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch import nn

from ...models.backbones.base import SAMBackboneBase
from .unwrap import unwrap_model

__all__ = ['TrainableParamsHook', 'summarize_parameters']


def _count(params: list[nn.Parameter]) -> tuple[int, int]:
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def summarize_parameters(model: nn.Module) -> list[tuple[str, int, int]]:
    """Trainable and total parameter counts per component.

    Components are the model's direct children; the backbone is split into its
    pretrained part and each PEFT method it reports (``backbone.peft_report``).

    Returns:
        list[tuple[str, int, int]]: ``(component, trainable, total)`` rows, with a
        final ``'total'`` row.
    """
    model = unwrap_model(model)
    rows = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if not params:
            continue
        report = child.peft_report if isinstance(child, SAMBackboneBase) else None
        if report is not None and report.trainable:
            peft_names = {n for names in report.parameter_names.values() for n in names}
            base = [p for n, p in child.named_parameters() if n not in peft_names]
            rows.append((f'{name} (pretrained)', *_count(base)))
            named = dict(child.named_parameters())
            for method, names in report.parameter_names.items():
                rows.append((f'{name} ({method})', *_count([named[n] for n in names])))
        else:
            rows.append((name, *_count(params)))
    rows.append(('total', *_count(list(model.parameters()))))
    return rows


@HOOKS.register_module()
class TrainableParamsHook(Hook):
    """Log a table of trainable / total parameters per component before training."""

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        rows = summarize_parameters(runner.model)
        width = max(len(r[0]) for r in rows)
        lines = [f'{"component":<{width}}  {"trainable":>13}  {"total":>13}  {"%":>7}']
        for name, trainable, total in rows:
            pct = 100.0 * trainable / total if total else 0.0
            lines.append(f'{name:<{width}}  {trainable:>13,}  {total:>13,}  {pct:>6.2f}%')
        runner.logger.info('Parameters:\n' + '\n'.join(lines))
