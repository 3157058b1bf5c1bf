"""The direction of imports between the project's folders, read with `ast` (nothing is imported).

The faces (views/: reports, exports, progress, argument parsing) sit above the graph wiring
(graphs/), which sits above the parts it wires (nodes/, grading/, sandbox/, serving/, prompts/)
and the tasks (tasks/); benchmark/ sits above them all. graphs/ reaches views/ only from its
command line (run.py, a face that stays where `python -m graphs.run` puts it) and from the old
name of the report's command line (report.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("graphs", "views", "nodes", "grading", "sandbox", "serving", "prompts", "benchmark", "tasks")
PARTS = ("nodes", "grading", "sandbox", "serving", "prompts")

# folder -> the top-level packages its files must not import
FORBIDDEN: dict[str, set[str]] = {
    "views": {"benchmark"},
    "graphs": {"benchmark", "views"},
    **{part: {"graphs", "views", "benchmark"} for part in PARTS},
    "tasks": {"graphs", "views", "benchmark"},
}
# file -> packages it may import although its folder may not
ALLOWED: dict[str, set[str]] = {
    "graphs/run.py": {"views"},  # the command line of a run: a face
    "graphs/report.py": {"views"},  # `python -m graphs.report`, the old name of `python -m views.report`
}


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, also inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(root).parent.parts)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package upwards
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def layering_violations(root: Path) -> list[str]:
    """`file:line imports module` for every import against FORBIDDEN (less ALLOWED)."""
    found = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            banned = forbidden - ALLOWED.get(rel, set())
            for line, module in imported_modules(path, root):
                if module.split(".")[0] in banned:
                    found.append(f"{rel}:{line} imports {module}")
    return found


def test_every_package_is_read():
    for package in PACKAGES:
        assert list((ROOT / package).rglob("*.py")), f"no Python file under {package}/"
    assert set(FORBIDDEN) | {"benchmark"} == set(PACKAGES)
    assert all((ROOT / rel).is_file() for rel in ALLOWED)


def test_imports_point_down_the_layers():
    found = layering_violations(ROOT)
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_the_report_numbers_need_no_plotting_or_html():
    path = ROOT / "views" / "report" / "derive.py"
    found = [f"views/report/derive.py:{line} imports {module}" for line, module in imported_modules(path, ROOT)
             if module.split(".")[0] in {"matplotlib", "jinja2", "markupsafe", "pygments"}]
    assert not found, "\n".join(found)


def test_a_wrong_import_is_named_with_its_file_and_line(tmp_path):
    (tmp_path / "nodes" / "sub").mkdir(parents=True)
    (tmp_path / "graphs").mkdir()
    (tmp_path / "nodes" / "ok.py").write_text("import json\nfrom nodes import tree\n")
    (tmp_path / "nodes" / "sub" / "bad.py").write_text(
        "import os\n\n\ndef f():\n    from graphs.search import x\n    from .. import views\n")
    (tmp_path / "graphs" / "run.py").write_text("from views.report import main\n")
    (tmp_path / "graphs" / "search.py").write_text("import views.export\nimport benchmark\n")
    assert sorted(layering_violations(tmp_path)) == [
        "graphs/search.py:1 imports views.export",
        "graphs/search.py:2 imports benchmark",
        "nodes/sub/bad.py:5 imports graphs.search",  # not `from .. import views`: that is nodes.views
    ]
