"""Prompted training rounds back-propagated one at a time, with the gradients of one graph.

SAM's recipe runs up to 11 decoder rounds per instance on one image embedding. The rounds
share nothing but the embedding and the decoder's weights: a round's mask prompt and next
point come from the previous round's detached outputs. So each round can be
back-propagated as soon as its loss is known, into a detached copy of the embedding (a
leaf) and the decoder's weights, and its activations freed; what the rounds leave is the
sum of their gradients. :class:`RoundGradients` collects that sum; :func:`attach` hands the
loss values to the step's graph through an autograd function whose backward multiplies the
collected gradients by the gradient that arrives for the loss (the loss scale of AMP, the
accumulation and batch normalisation factors) and passes the embedding's on into the
encoder, so the step still has one backward, one optimizer update and, under DDP, one
gradient all-reduce.

The one assumption: every loss term reaches the step's loss with the same weight (MMEngine's
``parse_losses`` sums every ``loss*`` key). The backward checks it and refuses otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

__all__ = ['RoundGradients', 'attach']


class RoundGradients:
    """The summed gradients of separately back-propagated rounds.

    Args:
        sources: the tensors the gradients belong to in the step's graph: the image
            embedding(s) the encoder computed and the head's trainable weights.
        divisor: what the summed terms are divided by in the step's loss (the instance-round
            count): each round's backward starts from ``1 / divisor``, as the step's own
            backward would, so that in bf16 too every operation sees the same values.

    Attributes:
        inputs: what the rounds run on: a detached leaf copy of each embedding, the
            weights themselves.
    """

    def __init__(self, sources: Sequence[Tensor], divisor: float | Tensor = 1) -> None:
        self.divisor = divisor
        self.sources = [s for s in sources if s.requires_grad]
        self.inputs = [s if s.is_leaf else s.detach().requires_grad_() for s in self.sources]
        self._sums: list[Tensor | None] = [None] * len(self.inputs)

    def leaf(self, source: Tensor) -> Tensor:
        """What a round uses in place of ``source`` (itself when nothing flows back into it)."""
        for original, leaf in zip(self.sources, self.inputs):
            if original is source:
                return leaf
        return source

    def collect(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """Back-propagate the sum of one round's ``terms`` now; returns them detached.

        The round's graph is freed here; its gradients are added to the running sums (see
        :attr:`grads`).
        """
        total = sum(terms.values()) / self.divisor
        if self.inputs and isinstance(total, Tensor) and total.requires_grad:
            # the step's forward runs under autocast, a backward must not (AMP: backward ops take the
            # dtypes of their forward ops, as they do in the step's own backward)
            with torch.autocast(total.device.type, enabled=False):
                grads = torch.autograd.grad(total, self.inputs, allow_unused=True)
            for index, grad in enumerate(grads):
                if grad is None:
                    continue
                total_grad = self._sums[index]
                self._sums[index] = grad if total_grad is None else total_grad + grad
        return {name: value.detach() for name, value in terms.items()}

    @property
    def grads(self) -> list[Tensor | None]:
        """Each input's summed gradient (None where no round reached it), in the input's dtype.

        The sums are in the inputs' dtypes (float32 for the weights and, under bf16 autocast
        on SAM's encoders, for the embedding too). One graph holding every round sums a
        weight that autocast casts to bf16 in bf16 (its rounds' gradients meet at one cached
        cast), so under bf16 autocast the decoder weights' gradients here are the more exact
        of the two and differ from the one-graph ones by that graph's bf16 rounding; in
        float32 the two agree to float32 rounding.
        """
        return list(self._sums)


class _AttachRoundGradients(torch.autograd.Function):
    """Loss values whose backward is ``upstream * collected gradient`` for each input."""

    @staticmethod
    def forward(ctx, names: tuple[str, ...], grads: tuple[Tensor, ...], *args: Tensor):  # noqa: ANN001, ANN205
        count = len(names)
        values, inputs = args[:count], args[count:]
        ctx.names, ctx.count = names, count
        ctx.grads = grads
        ctx.input_count = len(inputs)
        return tuple(value.clone() for value in values)

    @staticmethod
    def backward(ctx, *upstream: Tensor | None):  # noqa: ANN001, ANN205
        given = [(name, g) for name, g in zip(ctx.names, upstream) if g is not None]
        if not given:
            return (None, None, *([None] * (ctx.count + ctx.input_count)))
        _, scale = given[0]
        # shape-only runs (the memory estimator's fake tensors) hold no values to compare
        unequal = [] if is_fake(scale) else [name for name, g in given if not torch.equal(g, scale)]
        if unequal or len(given) != len(ctx.names):
            raise RuntimeError(
                f'the prompted rounds were back-propagated for the plain sum of the loss terms {list(ctx.names)}, '
                f'but the step weighs them differently ({unequal or "some unused"}): weigh them in '
                "PromptedMaskLoss, or set the head's round_memory='recompute'"
            )
        # scaled in place and handed over (AccumulateGrad keeps them as .grad): no second copy
        grads, ctx.grads = ctx.grads, None
        grads = tuple(None if g is None else g.mul_(scale.to(g.dtype)) for g in grads)
        return (None, None, *([None] * ctx.count), *grads)


def attach(terms: dict[str, Tensor], gradients: RoundGradients) -> dict[str, Tensor]:
    """``terms / divisor`` (from detached sums) made differentiable with ``gradients``' collected gradients.

    Args:
        terms: the summed loss terms of every round (detached).
        gradients: what :meth:`RoundGradients.collect` gathered.

    Returns:
        The terms divided by ``gradients.divisor``, in the step's graph: their backward gives
        the embedding (and so the encoder) and the head's weights the collected gradients
        times the arriving gradient (1 for MMEngine's plain sum of the losses).
    """
    pairs = [(x, g) for x, g in zip(gradients.sources, gradients.grads) if g is not None]
    names = tuple(terms)
    values = _AttachRoundGradients.apply(
        names,
        tuple(g for _, g in pairs),
        *(terms[n] / gradients.divisor for n in names),
        *(x for x, _ in pairs),
    )
    return dict(zip(names, values))
