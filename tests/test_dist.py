"""The release artefacts `scripts/build-wheels` leaves in dist/: the manylinux2014 wheel installs
into a fresh virtualenv with no Rust toolchain and runs a pool; `auditwheel` places each wheel
under its policy; the sdist carries what a source build needs. CI builds dist/ first
(`scripts/build-wheels --only manylinux`) and sets STATEFUL_POOL_REQUIRE_DIST=1, so a missing
manylinux wheel or sdist fails there; elsewhere a test whose artefact is missing is skipped."""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import stateful_pool
from conftest import REPO

VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
DIST = REPO / "dist"


def artefact(pattern: str, *, ci_builds_it: bool = True) -> Path:
    """The one file in dist/ matching ``pattern``, for this version. Missing, the test is skipped,
    or fails under STATEFUL_POOL_REQUIRE_DIST=1 if CI's `--only manylinux` build makes it."""
    found = sorted(DIST.glob(pattern.format(version=VERSION)))
    if not found:
        if ci_builds_it and os.environ.get("STATEFUL_POOL_REQUIRE_DIST") == "1":
            pytest.fail(f"dist/ has no {pattern}: run scripts/build-wheels")
        pytest.skip(f"dist/ has no {pattern} (run scripts/build-wheels)")
    assert len(found) == 1, f"several artefacts match {pattern}: {found}"
    return found[0]


def manylinux_wheel() -> Path:
    return artefact("stateful_pool-{version}-cp311-abi3-manylinux2014_x86_64*.whl")


def test_version_comes_from_cargo_toml() -> None:
    assert stateful_pool.__version__ == VERSION
    assert importlib.metadata.version("stateful-pool") == VERSION


# Run by the wheel's interpreter, from an empty directory: a pool end to end, in every form a
# user reaches first (spawn, blocking call, futures, map, the concurry face).
END_TO_END = """
import importlib.metadata, os, shutil, sys
import stateful_pool
from stateful_pool import SPool, SWorker
from stateful_pool.concurry import TaskWorker

assert shutil.which("cargo") is None and shutil.which("rustc") is None, "a Rust toolchain is on PATH"
assert stateful_pool.__file__.startswith(sys.prefix), stateful_pool.__file__
assert stateful_pool._core.__file__.startswith(sys.prefix), stateful_pool._core.__file__

class Square(SWorker):
    def spawn(self, offset):
        self.offset = offset
        return os.getpid()

    def execute(self, x):
        return x * x + self.offset

def double(x):
    return 2 * x

if __name__ == "__main__":
    with SPool(Square) as pool:
        pids = [f.result() for f in [pool.submit_spawn(1) for _ in range(2)]]
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert pool.execute(3) == 10
        futures = [pool.submit_execute(i) for i in range(100)]
        assert [f.result() for f in futures] == [i * i + 1 for i in range(100)]
        assert list(pool.map(range(5))) == [1, 2, 5, 10, 17]
    with TaskWorker.options(max_workers=2).init() as executor:
        assert list(executor.map(double, range(4))) == [0, 2, 4, 6]
    print(stateful_pool.__version__, importlib.metadata.version("stateful-pool"))
"""


@pytest.mark.timeout(300)
def test_manylinux_wheel_installs_and_runs_without_rust(tmp_path: Path) -> None:
    wheel = manylinux_wheel()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    # This interpreter's pip installs into the fresh venv; its dependencies come from the index.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-cache-dir", str(wheel)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # No Rust toolchain (nor this checkout) in reach: only the venv and the system's binaries.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTUP", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    out = subprocess.run(
        [str(python), "-I", "-c", END_TO_END], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [VERSION, VERSION]


def auditwheel_show(wheel: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return " ".join(out.stdout.split())  # auditwheel wraps its lines


def test_manylinux_wheel_needs_nothing_beyond_manylinux2014() -> None:
    report = auditwheel_show(manylinux_wheel())
    # glibc 2.17 is manylinux2014; a newer symbol version anywhere would raise the tag.
    assert 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' in report, report
    assert "GLIBC_2.18" not in report and "GLIBC_2.2" + "8" not in report, report


def test_musllinux_wheel_links_only_musl() -> None:
    """`auditwheel show` cannot read a musl wheel on a glibc host (it resolves `libc.so` to
    glibc's linker script), so this checks the extension itself: its only library is libc (musl's
    loader serves any `libc.*` name itself), and no symbol asks for a glibc version."""
    wheel = artefact("stateful_pool-{version}-cp311-abi3-musllinux_1_2_x86_64.whl", ci_builds_it=False)
    # pyelftools comes with auditwheel (scripts/build-wheels installs it): only once there is a wheel.
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("stateful_pool/_core.abi3.so")
    elf = ELFFile(io.BytesIO(data))
    needed = {
        tag.needed
        for section in elf.iter_sections()
        if isinstance(section, DynamicSection)
        for tag in section.iter_tags()
        if tag.entry.d_tag == "DT_NEEDED"
    }
    assert needed <= {"libc.so", "libc.musl-x86_64.so.1"}, needed
    assert b"GLIBC_2." not in data


def test_sdist_has_what_a_source_build_needs() -> None:
    sdist = artefact("stateful_pool-{version}.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = {
        "Cargo.toml",
        "Cargo.lock",
        "pyproject.toml",
        "README.md",
        "src/lib.rs",
        "python/stateful_pool/__init__.py",
        "python/stateful_pool/_core.pyi",
        "python/stateful_pool/py.typed",
    }
    assert needed <= names, needed - names
    built = ("target/", ".venv/", "dist/", "site/", "docs/api-rust/")
    stray = [n for n in names if n.endswith(".so") or n.startswith(built)]
    assert not stray, stray
