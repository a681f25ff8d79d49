"""The code's layering promises that import-linter cannot see (README, "Layers").

import-linter (`lint-imports`, run by `make test`) checks that imports go only downwards. It cannot tell
an import at a module's top from one hidden inside a function, which is how a cycle between layers used to
be dodged; this test finds those.
"""

from __future__ import annotations

import ast

import pytest

from infra.foundation.paths import PROJECT_ROOT

PACKAGES = ("schemas", "infra", "processor", "consumers", "dashboard")
# An import inside a function is allowed only with this marker and a reason on its line (a heavy
# third-party library behind one of our modules, loaded only by the command that needs it).
MARKER = "# lazy:"


def function_local_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of the project's own packages inside a function."""
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                names = ([a.name for a in child.names] if isinstance(child, ast.Import)
                         else [child.module or ""] if child.level == 0 else ["." + (child.module or "")])
                own = [n for n in names if n.split(".")[0] in PACKAGES or n.startswith(".")]
                if own and MARKER not in lines[child.lineno - 1]:
                    found.append((child.lineno, own[0]))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return found


def test_the_checker_finds_an_import_inside_a_function_and_respects_the_marker():
    source = ("import os\nfrom processor import batcher\n\ndef f():\n    from consumers import writer\n"
              "    import json\n    from schemas import events  # lazy: a reason\n    return writer\n")
    assert function_local_imports(source) == [(5, "consumers")]


@pytest.mark.parametrize("package", PACKAGES + ("tests",))
def test_no_import_of_our_own_modules_inside_a_function(package):
    offenders = []
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        for line, module in function_local_imports(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {module}")
    assert offenders == [], "imports inside functions (move them to the module's top):\n" + "\n".join(offenders)
