"""The commands and links of the documentation: README.md, docs/*.md and configs/*/README.md.

Which commands, and how they are checked:

- A command is a line of a fenced ```bash block (``\\`` continues a line, ``#`` starts a
  comment, leading ``VAR=value`` assignments are dropped), or an inline code span that
  starts with ``python tools/`` or ``.venv/bin/python tools/``.
- Every command is one of ``make TARGET``, ``python SCRIPT ...`` (or ``.venv/bin/python``)
  and ``tools/<launcher>.sh ...``; anything else fails the test, so the docs show only
  commands that can be checked.
- Every command is checked without running it: the Makefile defines the target; the script
  exists and its ``--help`` exits 0 and names every ``--option`` the command passes (the
  launchers pass theirs to ``tools/train.py`` or ``tools/test.py``); every ``configs/*.py``
  it names exists (except the README recipe's own file, which users write).
- Commands that run on a CPU in seconds are run for real: every command that ends in
  ``--help`` (through the same ``--help`` run), and the commands of ``RUN`` below, each in a
  fresh folder where ``tools/`` and ``configs/`` are the repository's; each must exit 0, and
  each must still be in the docs.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.user_data import RECIPE_NAME

DOCS = [
    REPO / 'README.md',
    *sorted((REPO / 'docs').glob('*.md')),
    *sorted((REPO / 'configs').glob('*/README.md')),
]
PYTHONS = ('python', '.venv/bin/python')
# Launcher -> the tool its extra arguments go to.
LAUNCHERS = {
    'tools/dist_train.sh': 'tools/train.py',
    'tools/slurm_train.sh': 'tools/train.py',
    'tools/dist_test.sh': 'tools/test.py',
    'tools/slurm_test.sh': 'tools/test.py',
}
# Documented commands that run on a CPU in seconds, without SAM's weights or a download.
RUN = [
    '.venv/bin/python tools/dataset_converters/generate_demo_data.py data/demo_multiclass --mode multiclass',
]


def _commands(doc: Path) -> list[str]:
    text = doc.read_text()
    commands = []
    for block in re.findall(r'^```bash\n(.*?)^```', text, flags=re.S | re.M):
        for line in block.replace('\\\n', ' ').splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens and re.fullmatch(r'[A-Z_]+=\S*', tokens[0]):
                tokens.pop(0)
            if tokens:
                commands.append(shlex.join(tokens))
    for span in re.findall(r'`((?:\.venv/bin/)?python tools/[^`]+)`', text):
        commands.append(span)
    return commands


COMMANDS = {(doc.relative_to(REPO).as_posix(), cmd) for doc in DOCS for cmd in _commands(doc)}


def _options(tokens: list[str]) -> set[str]:
    """The long options a command passes (``[--opt VALUE]`` counts too)."""
    return {m[1] for t in tokens if (m := re.match(r'\[?(--[a-z][\w-]*)', t))}


def _script_and_args(cmd: str) -> tuple[str, list[str]]:
    tokens = shlex.split(cmd)
    if tokens[0] in PYTHONS:
        return tokens[1], tokens[2:]
    if tokens[0] in LAUNCHERS:
        return LAUNCHERS[tokens[0]], tokens[1:]
    raise AssertionError(f'not a command the docs test can check: {cmd!r}')


@cache
def _help_texts() -> dict[str, tuple[int, str]]:
    """``--help`` of every documented script, run in one interpreter: script -> (exit code, output)."""
    scripts = sorted({_script_and_args(cmd)[0] for _, cmd in COMMANDS if not cmd.startswith('make ')})
    driver = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    buf = io.StringIO()
    sys.argv = [script, '--help']
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            code, _ = 1, buf.write(repr(e))
    out[script] = (code, buf.getvalue())
print(json.dumps(out))
"""
    existing = [s for s in scripts if (REPO / s).is_file()]
    proc = subprocess.run(
        [sys.executable, '-c', driver, *existing], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_docs_have_commands():
    docs = {doc for doc, _ in COMMANDS}
    assert {'README.md', 'docs/datasets.md', 'docs/training.md', 'docs/deployment.md'} <= docs
    assert all(any(cmd == run for _, cmd in COMMANDS) for run in RUN), (
        'a RUN command is no longer in the docs'
    )


@pytest.mark.slow
@pytest.mark.parametrize('doc, cmd', sorted(COMMANDS))
def test_documented_command_is_valid(doc, cmd):
    tokens = shlex.split(cmd)
    if tokens[0] == 'make':
        makefile = (REPO / 'Makefile').read_text()
        targets = set(re.findall(r'^([\w-]+):', makefile, flags=re.M))
        variables = [
            t.split('=', 1)[0] for t in tokens[1:] if '=' in t
        ]  # make VAR=value: the Makefile uses it
        assert set(t for t in tokens[1:] if '=' not in t) <= targets, f'{doc}: {cmd}: no such make target'
        assert all(f'$({v})' in makefile for v in variables), (
            f'{doc}: {cmd}: a variable the Makefile does not use'
        )
        return
    script, args = _script_and_args(cmd)
    assert (REPO / script).is_file(), f'{doc}: {cmd}: {script} does not exist'
    if tokens[0] in LAUNCHERS:
        assert os.access(REPO / tokens[0], os.X_OK), f'{tokens[0]} is not executable'
    for path in re.findall(r'\bconfigs/[\w./-]+\.py', cmd):
        assert path == RECIPE_NAME or (REPO / path).is_file(), f'{doc}: {cmd}: {path} does not exist'
    code, help_text = _help_texts()[script]
    assert code == 0, f'{script} --help exited with {code}:\n{help_text[-2000:]}'
    missing = {opt for opt in _options(args) if not re.search(rf'(?<![\w-]){opt}(?![\w-])', help_text)}
    assert not missing, f'{doc}: {cmd}: {script} has no option {sorted(missing)}'


@pytest.mark.slow
@pytest.mark.parametrize('cmd', RUN)
def test_quick_command_runs(cmd, tmp_path):
    (tmp_path / 'tools').symlink_to(REPO / 'tools')
    (tmp_path / 'configs').symlink_to(REPO / 'configs')
    tokens = shlex.split(cmd)
    assert tokens[0] in PYTHONS
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
    )
    proc = subprocess.run(
        [sys.executable, *tokens[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc):
    text = re.sub(r'^```.*?^```', '', doc.read_text(), flags=re.S | re.M)
    text = re.sub(r'`[^`\n]*`', '', text)  # code spans: `f(x)[i](y)` is no link
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+://', target) or target.startswith('#'):
            continue
        assert (doc.parent / target.split('#')[0]).exists(), f'{doc.relative_to(REPO)}: broken link {target}'
