"""Exit codes and BadInput have one home, automation/errors.py; every command uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from automation import errors

ROOT = Path(__file__).resolve().parent.parent


def test_codes_and_the_bad_input_error():
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_BAD_INPUT) == (0, 1, 2)
    one = errors.BadInput("must not be empty", flag="--cluster")
    assert str(one) == "--cluster: must not be empty" and one.flag == "--cluster" and one.message == "must not be empty"
    many = errors.BadInput("a: wrong", "b: missing")
    assert many.lines == ["a: wrong", "b: missing"] and str(many) == "a: wrong\nb: missing" and many.flag is None
    assert isinstance(one, ValueError)           # callers that caught ValueError around input still do
    with pytest.raises(TypeError):
        errors.BadInput()


def test_no_other_module_defines_an_exit_code_or_a_bad_input_class():
    found = []
    for path in [*ROOT.glob("automation/**/*.py"), *ROOT.glob("policies/**/*.py"), *ROOT.glob("infra/*.py")]:
        if path == ROOT / "automation" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == "BadInput":
                found.append(f"{path.relative_to(ROOT)}: class BadInput")
            targets = node.targets if isinstance(node, ast.Assign) else []
            names = [e.id for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])
                     if isinstance(e, ast.Name)]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("EXIT_") and n != "EXIT_CODES"]
    assert not found, found
