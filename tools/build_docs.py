"""Build the docs site into build/docs, with every warning an error.

    python tools/build_docs.py            # what `make docs` runs

Stages the hand-written pages (README.md as the home page, CHANGELOG.md, docs/ with its
images) into build/docs-src in the repository's own layout, so their relative links
resolve as they do on GitHub (a file of the repository they link to, an example config
say, is staged too, and served as it is), and writes an API reference from the
docstrings of every public name (``qretrain._EXPORTS``), one page per sub-package that
defines them, read from the source (no import, so no torch). Then runs ``mkdocs build
--strict`` (tools/mkdocs.yml) and fails on any warning or error line it prints,
mkdocstrings' included.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "docs-src"
SITE = ROOT / "build" / "docs"
CONFIG = ROOT / "tools" / "mkdocs.yml"
API_CSS = ROOT / "tools" / "api.css"
PAGES = ["README.md", "CHANGELOG.md", "docs"]  # copied as they are
PROBLEM = re.compile(r"^\s*(WARNING|ERROR|CRITICAL)\b|Aborted with \d+ warnings", re.MULTILINE)


def exports() -> dict[str, str]:
    """Public name -> defining module, as ``qretrain/__init__.py`` lists them."""
    sys.path.insert(0, str(ROOT / "src"))
    import qretrain  # the standard library only: the names load on first use

    return dict(qretrain._EXPORTS)


def defining_module(name: str, module: str) -> str:
    """The module whose source defines ``name``: a sub-package that loads its names on
    first use (``qretrain._lazy.lazy_names``) says which of its modules does, and the
    docs are read from the source (no import, so no torch)."""
    base = ROOT / "src" / module.replace(".", "/")
    source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    for node in ast.walk(ast.parse(source.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "lazy_names"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Dict)
        ):
            for key, value in zip(node.args[1].keys, node.args[1].values):
                if name in ast.literal_eval(value):
                    return defining_module(name, ast.literal_eval(key))
    return module


def page_of(module: str) -> str:
    """The API page of a defining module: its top sub-package (``models.contract`` ->
    ``models``), without a leading underscore (``_memory`` -> ``memory``)."""
    return module.split(".")[1].lstrip("_")


def api_pages(names: dict[str, str]) -> dict[str, str]:
    """API page file name -> its Markdown, mkdocstrings' ``:::`` blocks."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, module in names.items():
        groups[page_of(module)].append((name, module))
    index = [
        "# API reference",
        "",
        "Every name below is importable from the package itself (`qretrain.NAME`); it loads",
        "on first use. Generated from the docstrings by `make docs`.",
        "",
        "::: qretrain",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "",
        "| name | where it is defined |",
        "|---|---|",
    ]
    pages = {}
    for page in sorted(groups):
        members = groups[page]
        body = [
            f"# qretrain.{members[0][1].split('.')[1]}",
            "",
            "Importable as " + ", ".join(f"`qretrain.{n}`" for n, _ in members) + ".",
            "",
        ]
        for name, module in members:
            path = f"{defining_module(name, module)}.{name}"
            body += [f"::: {path}", ""]
            index.append(f"| [`qretrain.{name}`]({page}.md#{path}) | `{module}` |")
        pages[f"{page}.md"] = "\n".join(body)
    pages["index.md"] = "\n".join(index) + "\n"
    return pages


def stage_linked_files() -> None:
    """Stage each file of the repository that a staged page links to, at its own path."""
    sys.path.insert(0, str(ROOT / "tools"))
    from check_docs import EXTERNAL, links_of

    for page in list(STAGE.rglob("*.md")):
        for _, target in links_of(page.read_text(encoding="utf-8")):
            path_part = unquote(target.partition("#")[0].split("?")[0])
            if not path_part or EXTERNAL.match(target) or path_part.startswith("/"):
                continue
            source = Path(os.path.normpath(ROOT / page.parent.relative_to(STAGE) / path_part))
            staged = STAGE / source.relative_to(ROOT) if source.is_relative_to(ROOT) else None
            if staged is not None and source.is_file() and not staged.exists():
                staged.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, staged)


def stage() -> int:
    """Fill build/docs-src afresh; the number of API pages written."""
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    for item in PAGES:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, STAGE / item)
        else:
            shutil.copy2(source, STAGE / item)
    stage_linked_files()
    api = STAGE / "api"
    api.mkdir()
    shutil.copy2(API_CSS, api / API_CSS.name)
    pages = api_pages(exports())
    for name, text in pages.items():
        (api / name).write_text(text)
    return len(pages)


def main() -> int:
    start = time.perf_counter()
    n_api = stage()
    shutil.rmtree(SITE, ignore_errors=True)
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(CONFIG)]
    run = subprocess.run(mkdocs, cwd=ROOT, capture_output=True, text=True, check=False)
    log = run.stdout + run.stderr
    problems = [line for line in log.splitlines() if PROBLEM.search(line)]
    if run.returncode != 0 or problems:
        sys.stdout.write(log)
        print(
            f"docs: FAILED ({len(problems)} warning or error lines; mkdocs exit {run.returncode})"
        )
        return 1
    n_html = sum(1 for _ in SITE.rglob("*.html"))
    print(
        f"docs: {SITE.relative_to(ROOT)} built, {n_html} pages ({n_api} API), no warning, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
