"""tools/deployment/export_onnx.py: onnxruntime predicts like PyTorch, raw image in, scores out."""

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_sam.engine.hooks import SAMCheckpointHook
from mmseg_sam.models.peft import ConvLoRALinear
from tests.conftest import TINY_ARCH, TINY_HEAD, TINY_IMG, load_tool, perturb_
from tests.tools.sam2_tool_configs import sam2_trained

tool = load_tool('tools/deployment/export_onnx.py', 'export_onnx_tool')

HEADS = {
    'binary': dict(num_classes=2, out_channels=1, threshold=0.5),
    'per-class': dict(num_classes=3),
    'mask-cls': dict(num_classes=3, mode='mask_classification', num_queries=4),
}
# (PEFT, head, whether the PEFT is merged into the weights by default)
CASES = {
    'LoRA-merged': (dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')), 'binary', True),
    'COBOT-LoRA': (dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('q', 'v'))), 'per-class', True),
    'ConvLoRA': (dict(type='ConvLoRA', num_experts=3), 'mask-cls', False),
}


def _write_config(tmp_path: Path, peft: dict, head: str, checkpoint: Path) -> Path:
    head_cfg = dict(type='SAMMaskDecoderHead', **HEADS[head], **TINY_HEAD)
    if head == 'mask-cls':
        head_cfg['loss_decode'] = dict(type='MaskClassificationLoss')
    else:
        head_cfg['loss_decode'] = dict(type='CrossEntropyLoss', use_sigmoid=head == 'binary')
    model = dict(
        type='SAMEncoderDecoder',
        sam_checkpoint=str(checkpoint),
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            size=(TINY_IMG, TINY_IMG),
        ),
        backbone=dict(type='SAMViT', arch=TINY_ARCH, img_size=TINY_IMG, peft=peft),
        decode_head=head_cfg,
    )
    path = tmp_path / 'cfg.py'
    path.write_text(f'default_scope = "mmseg"\nmodel = {model!r}\n')
    return path


def _trained_model(tmp_path: Path, case: str, checkpoint: Path) -> tuple[Path, Path, torch.nn.Module]:
    """Config, trainable-only checkpoint and the model with non-zero adapters and spread routing."""
    peft, head, _ = CASES[case]
    cfg = _write_config(tmp_path, peft, head, checkpoint)
    torch.manual_seed(0)
    model = MODELS.build(tool.Config.fromfile(cfg).model).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * (2.0 if 'gate' in name else 0.1))
    saved = {'state_dict': dict(model.state_dict()), 'meta': {}}
    SAMCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model), saved)  # trainable-only
    torch.save(saved, tmp_path / 'trained.pth')
    return cfg, tmp_path / 'trained.pth', model


def _decisive(scores: np.ndarray, binary: bool, margin: float = 1e-3) -> np.ndarray:
    """Pixels whose label is not within ``margin`` of a tie, so rounding cannot flip it."""
    if binary:
        return np.abs(scores[:, 0] - 0.5) > margin
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] > margin


@pytest.mark.slow  # a dynamo export and an onnxruntime session per case: 15-30 s each
@pytest.mark.parametrize('case', list(CASES))
def test_onnxruntime_predicts_like_pytorch(tmp_path, sam_checkpoint, case, capsys):
    cfg, ckpt, model = _trained_model(tmp_path, case, sam_checkpoint)
    out = tmp_path / 'model.onnx'
    assert tool.main([str(cfg), str(ckpt), str(out), '--verify']) == 0
    printed = capsys.readouterr().out
    assert 'verify: max |onnxruntime - torch|' in printed and 'OK' in printed, printed

    onnx.checker.check_model(str(out), full_check=True)
    graph = onnx.load(str(out))
    props = {p.key: p.value for p in graph.metadata_props}
    assert props['mmseg_sam.channel_order'] == 'RGB'
    merged = CASES[case][2]
    assert props['mmseg_sam.merged_peft'] == (CASES[case][0]['type'] if merged else '')
    weights = [i.name for i in graph.graph.initializer]
    assert any('experts.2.conv.weight' in w for w in weights) == (case == 'ConvLoRA'), weights

    reference = tool.wrap(model)  # the model as trained: PEFT not merged
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out), session_options, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        image = torch.rand(1, 3, TINY_IMG, TINY_IMG, generator=gen) * 255
        with torch.no_grad():
            scores, labels = reference(image)
        ort_scores, ort_labels = session.run(['scores', 'labels'], {'image': image.numpy()})
        classes = 1 if case == 'LoRA-merged' else 3
        assert ort_scores.shape == (1, classes, TINY_IMG, TINY_IMG) and ort_labels.dtype == np.int64
        np.testing.assert_allclose(ort_scores, scores.numpy(), rtol=0, atol=1e-4)
        decisive = _decisive(scores.numpy(), binary=classes == 1)
        assert decisive.mean() > 0.9
        np.testing.assert_array_equal(ort_labels[decisive], labels.numpy()[decisive])
        if case == 'ConvLoRA':  # the check means something only if windows pick different experts
            windowed = next(m for m in model.modules() if isinstance(m, ConvLoRALinear))
            assert len(windowed.last_routing.unique()) > 1, windowed.last_routing.flatten().tolist()


@pytest.mark.parametrize('head', list(HEADS))
def test_graph_input_is_the_raw_image_and_outputs_are_mmseg_predictions(tmp_path, sam_checkpoint, head):
    """The wrapper on raw RGB equals mmseg's test_step on the BGR image (normalisation in the graph)."""
    cfg = _write_config(tmp_path, dict(type='LoRA', rank=2), head, sam_checkpoint)
    torch.manual_seed(0)
    model = MODELS.build(tool.Config.fromfile(cfg).model).eval()
    perturb_(model.decode_head, std=0.2)  # tokens start equal: make the classes differ
    bgr = torch.randint(0, 256, (3, TINY_IMG, TINY_IMG), dtype=torch.uint8)
    shape = (TINY_IMG, TINY_IMG)
    sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
    with torch.no_grad():
        (pred,) = model.test_step(dict(inputs=[bgr], data_samples=[sample]))
        scores, labels = tool.wrap(model)(bgr.flip(0)[None].float())  # BGR -> RGB
    expected = pred.seg_logits.data
    if head == 'per-class':  # mmseg keeps the logits of a multi-class head
        expected = expected.softmax(dim=0)
    assert torch.allclose(scores[0], expected, atol=1e-5)
    assert torch.equal(labels[0], pred.pred_sem_seg.data[0])


def test_bad_requests_are_refused(tmp_path, sam_checkpoint, capsys):
    cfg, ckpt, _ = _trained_model(tmp_path, 'ConvLoRA', sam_checkpoint)
    out = tmp_path / 'model.onnx'
    for extra, message in [
        (
            ['--dynamic'],
            '--dynamic is not supported: the exported graph has a static batch, height and width',
        ),
        (['--merge'], r"cannot merge \['ConvLoRA'\]: only methods linear"),
        (
            ['--shape', '64', '72'],
            '--shape 64 72: height and width must be positive multiples of the size divisor 16 of SAMViT',
        ),
        (['--opset', '14'], '--opset 14: the dynamo exporter needs opset >= 18'),
        (['--batch-size', '0'], '--batch-size must be >= 1, got 0'),
    ]:
        assert tool.main([str(cfg), str(ckpt), str(out), *extra]) == 1, extra
        err = capsys.readouterr().err
        assert re.search('error: ' + message, err), err  # (stderr may also hold logging noise)
    assert not out.exists()


@pytest.mark.slow
def test_sam2_model_exports_and_predicts_like_pytorch(tmp_path, capsys):
    """A tiny Hiera (three FPN levels into SAM 2's decoder), LoRA merged, at a non-square size.

    (Conv-LoRA's traceable dispatch is backbone-independent: tested on SAMViT above.)
    """
    run = sam2_trained(tmp_path, dict(type='LoRA', rank=2, targets=('q', 'v')))
    out = tmp_path / 'sam2.onnx'
    assert tool.main([str(run.cfg), str(run.checkpoint), str(out), '--shape', '64', '96', '--verify']) == 0
    printed = capsys.readouterr().out
    assert 'image (1, 3, 64, 96)' in printed and 'OK' in printed, printed
    graph = onnx.load(str(out))
    assert {p.key: p.value for p in graph.metadata_props}['mmseg_sam.merged_peft'] == 'LoRA'
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        scores, _ = tool.wrap(run.model)(image)  # the model as trained: PEFT not merged
    (ort_scores,) = session.run(['scores'], {'image': image.numpy()})
    assert ort_scores.shape == (1, 1, 64, 96)
    np.testing.assert_allclose(ort_scores, scores.numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_sam2_shape_must_be_a_multiple_of_the_size_divisor(tmp_path, capsys):
    run = sam2_trained(tmp_path, dict(type='LoRA', rank=2))
    out = tmp_path / 'sam2.onnx'
    assert tool.main([str(run.cfg), str(run.checkpoint), str(out), '--shape', '64', '80']) == 1
    err = capsys.readouterr().err
    assert (
        '--shape 64 80: height and width must be positive multiples of the size divisor 32 of SAM2Hiera'
        in err
    )
    assert not out.exists()
