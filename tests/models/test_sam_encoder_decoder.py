import pytest
import torch
from torch import nn

from mmseg_sam.engine.hooks import summarize_parameters
from mmseg_sam.models.peft import PEFT_METHODS, BasePEFTMethod, PEFTLayerMixin, report_aux_loss
from tests.conftest import TINY_ARCH, TINY_IMG, tiny_batch, tiny_segmentor


class _ScaledIdentity(nn.Module, PEFTLayerMixin):
    """Test PEFT layer that reports an auxiliary loss on every training forward."""

    def __init__(self, inner: nn.Module, name: str) -> None:
        super().__init__()
        self.inner = inner
        self.scale = nn.Parameter(torch.ones(()))
        self.loss_name = name

    def forward(self, x):
        if self.training:
            report_aux_loss(self.loss_name, self.scale * 0 + 0.5)
        return self.inner(x) * self.scale


class _AuxLossMethod(BasePEFTMethod):
    def __init__(self, loss_name: str = 'loss_aux_test') -> None:
        self.loss_name = loss_name

    def inject(self, model):
        params = {}
        for i, block in enumerate(model.blocks):
            block.mlp = _ScaledIdentity(block.mlp, self.loss_name)
            params[f'blocks.{i}.mlp.scale'] = block.mlp.scale
        return params


@pytest.fixture
def aux_loss_method():
    """Register the test-only method while a test runs, so the registry others enumerate stays clean."""
    PEFT_METHODS.register_module(module=_AuxLossMethod, force=True)
    yield '_AuxLossMethod'
    PEFT_METHODS._module_dict.pop('_AuxLossMethod', None)


def test_sam_checkpoint_fills_both_parts(reference_sam, sam_checkpoint):
    model = tiny_segmentor(sam_checkpoint)
    assert torch.equal(model.backbone.pos_embed, reference_sam.image_encoder.pos_embed)
    assert torch.equal(
        model.decode_head.mask_decoder.iou_token.weight, reference_sam.mask_decoder.iou_token.weight
    )


def test_aux_losses_reach_the_loss_dict(aux_loss_method):
    model = tiny_segmentor(peft=dict(type=aux_loss_method)).train()
    losses = model.loss(*tiny_batch())
    assert set(losses) >= {'decode.loss_ce', 'decode.acc_seg', 'loss_aux_test'}
    assert losses['loss_aux_test'].item() == pytest.approx(
        0.5 * TINY_ARCH['num_layers']
    )  # summed over blocks
    # nothing is stored on the modules: a forward outside model.loss reports nowhere
    assert all('_aux_losses' not in vars(m) for m in model.modules())


def test_aux_loss_name_clash(aux_loss_method):
    model = tiny_segmentor(peft=dict(type=aux_loss_method, loss_name='decode.loss_ce')).train()
    with pytest.raises(KeyError, match="auxiliary loss 'decode.loss_ce' clashes"):
        model.loss(*tiny_batch())


def test_parameter_summary():
    model = tiny_segmentor(peft=dict(type='LoRA', rank=4, targets=('q', 'v')))
    rows = {name: (trainable, total) for name, trainable, total in summarize_parameters(model)}
    lora = 2 * 2 * (32 * 4 + 4 * 32)
    assert rows['backbone (LoRA)'] == (lora, lora)
    assert rows['backbone (pretrained)'][0] == 0
    head_trainable = sum(p.numel() for p in model.decode_head.parameters() if p.requires_grad)
    assert rows['decode_head'][0] == head_trainable > 0
    assert rows['total'] == (lora + head_trainable, sum(p.numel() for p in model.parameters()))


def test_predict_binary():
    model = tiny_segmentor().eval()
    inputs, samples = tiny_batch(1)
    [result] = model.predict(inputs, samples)
    assert result.pred_sem_seg.data.shape == (1, TINY_IMG, TINY_IMG)
    assert set(result.pred_sem_seg.data.unique().tolist()) <= {0, 1}
