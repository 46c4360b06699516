"""Which methods merge is declared once, by each method class (``BasePEFTMethod.mergeable``):
``merge_peft`` follows the declarations, and every list in the docs and the tools' help equals
the one derived from them (``mergeable_phrase``)."""

import re

import pytest
import torch

from mmseg_sam.models.peft import PEFT_METHODS, merge_peft, mergeable_methods, mergeable_phrase
from mmseg_sam.models.peft.presets import PRESETS
from tests.conftest import REPO, TINY_ARCH, tiny_vit
from tests.peft_tiny import tiny

MERGEABLE = mergeable_phrase()
NOT_MERGEABLE = mergeable_phrase(mergeable=False)
# Where the mergeable methods (and, in some, those refused) are listed.
LISTS = {
    'mmseg_sam/models/peft/base.py': (MERGEABLE, NOT_MERGEABLE),
    'tools/model_converters/merge_peft.py': (MERGEABLE, NOT_MERGEABLE),
    'tools/model_converters/export_sam.py': (MERGEABLE,),
    'tools/deployment/export_onnx.py': (MERGEABLE,),
    'docs/deployment.md': (MERGEABLE, NOT_MERGEABLE),
    'docs/checkpoints.md': (MERGEABLE,),
    'docs/adding_a_peft_method.md': (MERGEABLE,),
}
SCANNED = ['README.md', *(p.relative_to(REPO).as_posix() for p in sorted((REPO / 'docs').glob('*.md')))]
SCANNED += [
    p.relative_to(REPO).as_posix() for d in ('tools', 'mmseg_sam') for p in sorted((REPO / d).rglob('*.py'))
]


def _text(path: str) -> str:
    """The file with its whitespace runs (line breaks, docstring indents, comment marks) as one space."""
    return ' '.join((REPO / path).read_text().replace('\n#', '\n').split())


def test_declarations_are_what_merge_peft_does():
    declared = mergeable_methods()
    assert declared['LoRA'] and declared['DoRA'] and declared['SSF'] and declared['BitFit']
    assert declared['COBOT'] is None and not declared['ConvLoRA'] and not declared['VPT']
    for item in PRESETS:
        if item.peft is None:
            continue
        peft = tiny(item)['peft']
        expected = declared[peft['type']]
        if expected is None:  # COBOT: its host's declaration
            expected = declared[peft['host']['type']]
        torch.manual_seed(0)
        model = tiny_vit(dict(TINY_ARCH), peft)
        assert set(model.peft_report.mergeable.values()) == {expected}, item.name
        if expected:
            merge_peft(model)
        else:
            with pytest.raises(ValueError, match=rf'cannot merge .*\({re.escape(MERGEABLE)}\)'):
                merge_peft(model)


@pytest.mark.parametrize('path', sorted(LISTS))
def test_lists_equal_the_declarations(path):
    text = _text(path)
    for phrase in LISTS[path]:
        assert phrase in text, f'{path} should list {phrase!r}'


@pytest.mark.parametrize('path', SCANNED)
def test_no_other_list_of_mergeable_methods(path):
    """A list in a sentence about merging (BitFit and SSF close together, or Conv-LoRA ... LST) is one
    of the two phrases."""
    text = _text(path)
    allowed = [
        m.span() for phrase in (MERGEABLE, NOT_MERGEABLE) for m in re.finditer(re.escape(phrase), text)
    ]
    pattern = r'BitFit[^.|;]{0,40}?SSF|SSF[^.|;]{0,40}?BitFit|Conv-?LoRA[^.|;]{0,60}?\bLST\b'
    for m in re.finditer(pattern, text):
        if 'merg' not in text[max(0, m.start() - 100) : m.start()].rsplit('. ', 1)[-1].lower():
            continue  # not a sentence about merging
        assert any(a <= m.start() and m.end() <= b for a, b in allowed), (
            f'{path}: {text[max(0, m.start() - 40) : m.end() + 40]!r} lists methods by hand; '
            f'write mergeable_phrase(): {MERGEABLE!r} / {NOT_MERGEABLE!r}'
        )


def test_peft_md_table_column_follows_the_declarations():
    rows = re.findall(r'^\| `(\w+)` \| .* \| ([^|]+) \|$', (REPO / 'docs/peft.md').read_text(), flags=re.M)
    column = {name: cell.strip() for name, cell in rows if name in PEFT_METHODS.module_dict}
    assert set(column) == set(mergeable_methods()), column
    for name, declared in mergeable_methods().items():
        want = {True: 'yes', False: 'no', None: 'if the host is'}[declared]
        assert column[name].startswith(want), (name, column[name])
