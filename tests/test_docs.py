"""The docs site's pages (docs/*.md): every code block runs, every command is a real one, and
the failure-semantics page includes the README's section. `scripts/build-docs` builds the site
itself strictly (broken links, anchors and API names fail it); CI runs it before pytest."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import stateful_pool
from conftest import REPO, run_script
from doc_blocks import code_blocks, group_id, needs_cluster, runnable_python

DOCS = REPO / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "api-rust" not in p.parts)
PYTHON = [(page, group) for page in PAGES for group in runnable_python(page)]


def page_name(page: Path) -> str:
    return str(page.relative_to(DOCS))


@pytest.mark.parametrize(("page", "blocks"), PYTHON, ids=[f"{page_name(p)}:{group_id(g)}" for p, g in PYTHON])
def test_docs_python_example_runs(page: Path, blocks: list[str]) -> None:
    out = run_script("\n".join(blocks), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


def test_every_docs_block_is_run_or_checked() -> None:
    for page in PAGES:
        text = page.read_text()
        languages = set(re.findall(r"^```(\w*)", text, re.M)) - {""}  # "" is a closing fence
        assert languages <= {"python", "rust", "bash"}, f"{page_name(page)}: no test runs {languages}"
        python = code_blocks(page, "python")
        run = sum(len(group) for group in runnable_python(page))
        assert run + sum(map(needs_cluster, python)) == len(python), page_name(page)
    # The one cluster example: the same one as the README's.
    clusters = [b for p in PAGES for b in code_blocks(p, "python") if needs_cluster(b)]
    assert clusters == [b for b in code_blocks(REPO / "README.md", "python") if needs_cluster(b)]


def test_docs_commands_are_the_readmes_or_scripts() -> None:
    """A shell command in the docs is one the README documents (and CI runs), a pip install of
    this package, or one of scripts/, so none can drift from what is tested."""
    readme = set(code_blocks(REPO / "README.md", "bash"))
    for page in PAGES:
        for block in code_blocks(page, "bash"):
            if block in readme or re.fullmatch(r"pip install stateful-pool\n", block):
                continue
            script = re.fullmatch(r"(scripts/[\w-]+)( .*)?\n", block)
            assert script and (REPO / script[1]).is_file(), f"{page_name(page)}: unknown command {block!r}"


def test_failure_semantics_page_includes_the_readme_section() -> None:
    readme = (REPO / "README.md").read_text()
    section = re.search(
        r"<!-- --8<-- \[start:failure-semantics\] -->\n(.*)<!-- --8<-- \[end:failure-semantics\] -->", readme, re.S
    )
    assert section and "WorkerCrashedError" in section[1], "README lost its failure-semantics markers"
    assert '--8<-- "README.md:failure-semantics"' in (DOCS / "failure-semantics.md").read_text()


def test_every_page_is_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    for page in PAGES:
        entry = rf": {re.escape(page_name(page))}$"
        assert re.search(entry, nav, re.M), f"{page_name(page)} is not in the nav of mkdocs.yml"


@pytest.mark.timeout(600)
def test_docs_rust_example_runs(tmp_path: Path) -> None:
    """Each Rust block is the `main.rs` of a binary depending on this crate, built and run."""
    blocks = [b for page in PAGES for b in code_blocks(page, "rust")]
    assert blocks, "the Rust page lost its example"
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed (the README's test command runs `cargo test` too)"
    version = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
    for i, block in enumerate(blocks):
        crate = tmp_path / f"example{i}"
        (crate / "src").mkdir(parents=True)
        (crate / "Cargo.toml").write_text(
            f'[package]\nname = "docs-example-{i}"\nversion = "{version}"\nedition = "2021"\n\n'
            f'[dependencies]\nworker_pool = {{ path = "{REPO}" }}\n\n[workspace]\n'
        )
        (crate / "src" / "main.rs").write_text(block)
        shutil.copy(REPO / "Cargo.lock", crate / "Cargo.lock")  # the versions the crate is tested with
        env = {**os.environ, "CARGO_TARGET_DIR": str(REPO / "target")}
        out = subprocess.run(
            [cargo, "run", "--quiet", "--offline"],
            cwd=crate,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip(), "the example printed nothing"


def reference_directives() -> dict[str, list[str] | None]:
    """Each `::: dotted.path` of docs/reference/ with its `members:` list (None: all public)."""
    found: dict[str, list[str] | None] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for directive in re.split(r"^(?=::: )", page.read_text(), flags=re.M)[1:]:
            path = directive.split()[1]
            members = re.search(r"^ +members:\n((?: +- \w+\n)+)", directive, re.M)
            found[path] = re.findall(r"- (\w+)", members[1]) if members else None
    return found


def resolve(path: str) -> object:
    module, _, name = path.rpartition(".")
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(module), name)


def test_api_reference_names_exist_and_cover_the_public_api() -> None:
    """mkdocstrings skips a `members:` name that no longer exists without a warning: check them
    here, and that every name `stateful_pool` exports appears in the reference."""
    documented: list[object] = []
    for path, members in reference_directives().items():
        target = resolve(path)
        documented.append(target)
        names = members if members is not None else list(getattr(target, "__all__", []))
        for name in names:
            assert hasattr(target, name), f"docs/reference documents {path}.{name}, which does not exist"
            documented.append(getattr(target, name))
    missing = [
        name
        for name in stateful_pool.__all__
        if name != "__version__" and not any(getattr(stateful_pool, name) is obj for obj in documented)
    ]
    assert not missing, f"exported by stateful_pool but not in docs/reference: {missing}"
