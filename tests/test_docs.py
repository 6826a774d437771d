"""Every code block in README.md and docs/*.md runs, and shown output is checked (with Sybil).

A block's info string says how it is checked:

- ``python``: run; a block that starts with ``>>>`` is a doctest, its output compared with
  ELLIPSIS, NORMALIZE_WHITESPACE and Sybil's NUMBER (a number matches to the digits shown).
- ``python from=examples/NAME.py``: an excerpt of that example. Every line must appear in the
  script, and the block runs after the script, in its namespace.
- ``console``: each ``$ command`` runs (``symjac`` as ``python -m symjac``) in a scratch folder
  beside examples/; its output must match the lines below it (``...`` elides).
- ``text output-of=COMMAND``: COMMAND's output, checked like a doctest's.
- ``text benchmark=COMMAND``: timings, too slow and machine-dependent for CI. The command must
  exist; with ``SYMJAC_DOCS_BENCHMARKS=1`` it runs, and its output must have the rows shown.
- ``bash``: the README's install and test commands; the test command must be the one .ci/run runs.

A fence with no info string, or one not listed here, fails the test: nothing goes unchecked.
Sybil (pip install 'symjac[test]') parses the blocks and compares doctest output.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import runpy
import shlex
import subprocess
import sys
import tempfile

import pytest

sybil = pytest.importorskip("sybil")
from sybil import Sybil  # noqa: E402
from sybil.evaluators.doctest import NUMBER, OutputChecker  # noqa: E402
from sybil.parsers.markdown import PythonCodeBlockParser  # noqa: E402
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | NUMBER
BENCHMARKS = os.environ.get("SYMJAC_DOCS_BENCHMARKS") == "1"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = "100"  # the CLI fits its matrices to the terminal
    env["SYMJAC_PROGRESS"] = "0"
    return env


def _compare(want: str, got: str, flags: int = FLAGS) -> str | None:
    """None when ``got`` matches ``want`` as a doctest would; else a readable difference."""
    checker = OutputChecker()
    if checker.check_output(want, got, flags):
        return None
    example = doctest.Example("", want)
    return checker.output_difference(example, got, flags)


def _command(text: str) -> list[str]:
    argv = shlex.split(text)
    if argv[0] == "symjac":
        return [sys.executable, "-m", "symjac", *argv[1:]]
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


def _run(text: str, cwd: pathlib.Path) -> tuple[int, str, str]:
    done = subprocess.run(_command(text), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout, done.stderr


def _scratch() -> pathlib.Path:
    """A folder with examples/ (linked) and an empty docs/, so commands never write into the repo."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="symjac-docs-"))
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / "docs").mkdir()
    return folder


def _console(example):
    blocks = re.split(r"^\$ ", example.parsed, flags=re.MULTILINE)[1:]
    if not blocks:
        return "a console block needs `$ command` lines"
    folder = _scratch()
    for block in blocks:
        command, _, want = block.partition("\n")
        code, out, err = _run(command, folder)
        if code:
            return f"`{command}` exited with status {code}:\n{err}"
        difference = _compare(want, out, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        if difference:
            return f"`{command}`:\n{difference}"
    return None


def _output_of(example, command: str):
    code, out, err = _run(command, ROOT)
    if code:
        return f"`{command}` exited with status {code}:\n{err}"
    difference = _compare(example.parsed, out)
    return f"`{command}`:\n{difference}" if difference else None


def _row_labels(text: str) -> list[str]:
    """The leading words of each line (a table's row and header labels), numbers dropped."""
    return [re.split(r"\s{2,}|\d", line.strip(), maxsplit=1)[0] for line in text.splitlines() if line.strip()]


def _benchmark(example, command: str):
    script = ROOT / _command(command)[1]
    if not script.is_file():
        return f"benchmark block names {command!r}, but {script} does not exist"
    if not BENCHMARKS:
        return None
    code, out, err = _run(command, ROOT)
    if code:
        return f"`{command}` exited with status {code}:\n{err}"
    missing = [label for label in _row_labels(example.parsed) if label and label not in out]
    return f"`{command}` printed no row {missing}" if missing else None


_LINE_CACHE: dict[pathlib.Path, set[str]] = {}
_NAMESPACES: dict[pathlib.Path, dict] = {}


def _from_example(example, path: str):
    script = ROOT / path
    if script not in _LINE_CACHE:
        _LINE_CACHE[script] = {line.strip() for line in script.read_text().splitlines()}
    lines = [line for line in example.parsed.splitlines() if line.strip()]
    missing = [line for line in lines if line.strip() not in _LINE_CACHE[script]]
    if missing:
        return f"these lines are not in {path}:\n" + "\n".join(missing)
    if script not in _NAMESPACES:
        sys.path.insert(0, str(script.parent))
        try:
            _NAMESPACES[script] = runpy.run_path(str(script), run_name="__docs__")
        finally:
            sys.path.remove(str(script.parent))
    example.namespace.update({k: v for k, v in _NAMESPACES[script].items() if not k.startswith("__")})
    source = "\n" * (example.line + example.parsed.line_offset) + example.parsed
    exec(compile(source, example.path, "exec"), example.namespace)
    return None


def _bash(example):
    commands = [line.split("#")[0].strip() for line in example.parsed.splitlines() if line.strip()]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_tests = re.search(r"^python3? -m pytest .*$", ci, flags=re.MULTILINE)
    readme_tests = [c.split("&&")[-1].strip() for c in commands if "pytest" in c]
    if ci_tests is None or not readme_tests:
        return "README's test command and .ci/run's must both run pytest"
    if readme_tests[0] != ci_tests.group(0).replace("python3 ", "python ", 1):
        return f"README runs `{readme_tests[0]}` but .ci/run runs `{ci_tests.group(0)}`"
    return None


class OtherBlocks:
    """Sybil parser for every fenced block except plain ``python`` (Sybil's own parser runs those)."""

    def __init__(self):
        self.lexer = FencedCodeBlockLexer(language=r".+", mapping={"language": "info", "source": "source"})

    def __call__(self, document):
        for region in self.lexer(document):
            info = region.lexemes["info"].strip()
            if info == "python":
                continue
            region.parsed = region.lexemes["source"]
            region.evaluator = self._evaluator(info)
            yield region

    @staticmethod
    def _evaluator(info: str):
        language, _, rest = info.partition(" ")
        key, _, value = rest.partition("=")
        if language == "python" and key == "from":
            return lambda example: _from_example(example, value)
        if language == "console" and not rest:
            return _console
        if language == "text" and key == "output-of":
            return lambda example: _output_of(example, value)
        if language == "text" and key == "benchmark":
            return lambda example: _benchmark(example, value)
        if language == "bash" and not rest:
            return _bash
        return lambda example: f"no check for a ```{info} block (see tests/test_docs.py)"


SYBIL = Sybil(
    parsers=[PythonCodeBlockParser(doctest_optionflags=FLAGS), OtherBlocks()],
    path=str(ROOT),
)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, monkeypatch):
    # blocks run where files they write land in a scratch folder and `examples.models` imports
    scratch = _scratch()
    monkeypatch.chdir(scratch)
    monkeypatch.syspath_prepend(str(scratch))
    document = SYBIL.parse(path)
    for example in document.examples():
        try:
            example.evaluate()
        except ImportError as exc:  # an optional package (control, matplotlib) is not installed
            pytest.skip(f"{path.relative_to(ROOT)}, code block at line {example.line}: {exc}")
        except Exception as exc:
            raise AssertionError(
                f"{path.relative_to(ROOT)}, code block at line {example.line}:\n{exc}"
            ) from exc


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fence_names_its_check(path):
    fence = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = re.match(r"^\s*(```+)(.*)$", line)
        if not match:
            continue
        if fence is None:
            fence = match.group(1)
            assert match.group(2).strip(), f"{path.name}:{number}: a code block needs an info string"
        elif match.group(1) == fence and not match.group(2).strip():
            fence = None


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert first and text.index("```") == first.start(), "README's first code block is the commands"
    lines = [line for line in first.group(1).splitlines() if line.strip()]
    assert len(lines) == 2 and "quickstart" in lines[0] and "pytest" in lines[1]
