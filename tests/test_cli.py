"""The command line: one-line errors with exit status 2, module:function targets, summaries."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

BAD_MODEL = """
import numpy as np

def branchy(x):
    if x[0] > 0:
        return x
    return -x

def two(x, y):
    return x * y
"""


def _symjac(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100", SYMJAC_PROGRESS="0")
    return subprocess.run(
        [sys.executable, "-m", "symjac", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bad_model.py"
    path.write_text(BAD_MODEL)
    return path


def _one_line_error(done, *phrases):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback
    assert lines[0].startswith("python -m symjac show: error: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_wrong_number_of_shapes(bad_model):
    done = _symjac("show", f"{bad_model}:two", "--shape", "2")
    _one_line_error(done, "two takes 2 arguments, got 1 --shape flag")


def test_too_many_shapes():
    done = _symjac("show", "examples/models.py:two_link_arm", "--shape", "2", "--shape", "2")
    _one_line_error(done, "two_link_arm takes 1 argument, got 2 --shape flags")


def test_no_shape():
    _one_line_error(_symjac("show", "examples/models.py:two_link_arm"), "--shape")


def test_untraceable_code_names_the_line(bad_model):
    done = _symjac("show", f"{bad_model}:branchy", "--shape", "2")
    _one_line_error(done, "cannot trace branchy", "symjac.where", f"{bad_model}:5")


def test_debug_shows_the_traceback(bad_model):
    for args in (("--debug", "show"), ("show", "--debug")):
        done = _symjac(*args, f"{bad_model}:branchy", "--shape", "2")
        assert done.returncode != 0 and "Traceback" in done.stderr and "UntraceableError" in done.stderr


def test_missing_file():
    _one_line_error(_symjac("show", "no/such/model.py:f", "--shape", "2"), "no such file: no/such/model.py")


def test_missing_function():
    done = _symjac("show", "examples/models.py:nope", "--shape", "2")
    _one_line_error(done, "examples/models.py has no function 'nope'")


def test_missing_module():
    done = _symjac("show", "examples.nomodule:f", "--shape", "2")
    _one_line_error(done, "no module named 'examples.nomodule'")


def test_target_without_function():
    _one_line_error(_symjac("show", "examples/models.py", "--shape", "2"), "expected FILE.py:FUNCTION")


def test_bad_shape_is_argparse_usage_error():
    done = _symjac("show", "examples/models.py:two_link_arm", "--shape", "two")
    assert done.returncode == 2 and "--shape takes comma-separated sizes" in done.stderr


def test_module_syntax_and_file_syntax_agree():
    by_module = _symjac("show", "examples.models:two_link_arm", "--shape", "2", "--names", "q")
    by_file = _symjac("show", "examples/models.py:two_link_arm", "--shape", "2", "--names", "q")
    assert by_module.returncode == 0 == by_file.returncode, by_module.stderr + by_file.stderr
    report = by_module.stdout.split("symbolic:")[0]
    assert report == by_file.stdout.split("symbolic:")[0]
    assert "sin(q₀ + q₁)" in report


def test_program_name_and_grammar(tmp_path):
    (tmp_path / "one.py").write_text("def one(x):\n    return (x * x).sum()\n")
    done = _symjac("show", str(tmp_path / "one.py:one"), "--shape", "scalar")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Exact Jacobian (1 output element x 1 input element):")
    assert _symjac("--help").stdout.startswith("usage: python -m symjac ")
    from symjac.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_large_matrix_is_summarised_unless_full(tmp_path):
    (tmp_path / "big.py").write_text("import numpy as np\n\ndef big(x):\n    return np.sin(x) * x.sum()\n")
    target = str(tmp_path / "big.py:big")
    done = _symjac("show", target, "--shape", "30")
    assert done.returncode == 0, done.stderr
    header, summary = done.stdout.splitlines()[:2]
    assert header == "Exact Jacobian (30 output elements x 30 input elements):"
    assert summary == "30 x 30 matrix, 900 nonzero entries (first 10; --full prints the matrix):"
    assert len(done.stdout.splitlines()) < 30
    full = _symjac("show", target, "--shape", "30", "--full")
    assert full.returncode == 0 and len(full.stdout.splitlines()) > 100


def test_main_returns_usage_status_in_process(capsys):
    from symjac.cli import main

    assert main(["show", "no/such.py:f", "--shape", "2"]) == 2
    assert capsys.readouterr().err == "symjac show: error: no such file: no/such.py\n"


def test_unwritable_output_file():
    done = _symjac("show", "examples/models.py:two_link_arm", "--shape", "2", "--latex", "/no/such/dir/j.tex")
    _one_line_error(done, "cannot write --latex /no/such/dir/j.tex")
