"""Supply chain: the flex template image installs exactly pinned, hash-checked dependencies.

templates/requirements.txt (pip-compile --generate-hashes of setup.py) must pin every package with ``==`` and at
least one sha256 hash, cover every runtime dependency of setup.py with a version its specifier allows (the same
version where setup.py pins one), and the Dockerfile must install it with ``--require-hashes`` and the project
itself with ``--no-deps`` (so nothing unhashed comes in through the back door).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "templates" / "requirements.txt"
DOCKERFILE = ROOT / "templates" / "Dockerfile"

_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)(?:\s*;\s*(?P<marker>.+))?")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def entries(text: str) -> list[tuple[str, list[str]]]:
    """(requirement, [hash options]) per entry: continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            if current:
                logical.append(current)
                current = ""
            continue
        current += " " + line.strip().rstrip("\\").strip()
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    if current:
        logical.append(current)
    out = []
    for item in logical:
        parts = item.split()
        requirement = " ".join(p for p in parts if not p.startswith("--hash="))
        out.append((requirement.strip(), [p for p in parts if p.startswith("--hash=")]))
    return out


def pins(text: str) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for requirement, _ in entries(text):
        match = _PIN.fullmatch(requirement)
        if match:
            found[canonicalize_name(match["name"])] = Version(match["version"])
    return found


def install_requires() -> list[Requirement]:
    """setup.py's INSTALL_REQUIRES, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INSTALL_REQUIRES" for t in node.targets):
            return [Requirement(r) for r in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no INSTALL_REQUIRES list")


def pin_problems(text: str) -> list[str]:
    problems = []
    seen: set[str] = set()
    for requirement, hashes in entries(text):
        if requirement.startswith("-"):
            problems.append(f"{requirement!r}: pip options other than --hash are not allowed here")
            continue
        match = _PIN.fullmatch(requirement)
        if match is None:
            problems.append(f"{requirement!r} is not pinned with == to one version")
            continue
        name = canonicalize_name(match["name"])
        if name in seen:
            problems.append(f"{name} is pinned twice")
        seen.add(name)
        if not hashes:
            problems.append(f"{requirement} has no --hash")
        elif not all(_HASH.fullmatch(h) for h in hashes):
            problems.append(f"{requirement}: every hash must be --hash=sha256:<64 hex digits>")
    return problems


def test_every_requirement_is_pinned_with_hashes():
    assert pin_problems(REQUIREMENTS.read_text()) == []
    assert len(pins(REQUIREMENTS.read_text())) > 50  # the whole transitive closure, not just the direct ones


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("orjson>=3.10 \\\n    --hash=sha256:" + "a" * 64 + "\n", "not pinned"),
        ("orjson==3.13.0\n", "no --hash"),
        ("orjson==3.13.0 \\\n    --hash=md5:abc\n", "sha256"),
        ("orjson==3.13.0 \\\n    --hash=sha256:abc\n", "64 hex"),
        ("-e .\n", "pip options"),
        ("git+https://example.com/x.git\n", "not pinned"),
        (f"orjson==3.13.0 --hash=sha256:{'a' * 64}\norjson==3.13.0 --hash=sha256:{'b' * 64}\n", "twice"),
    ],
)
def test_the_check_catches_unpinned_or_unhashed_lines(text, problem):
    assert any(problem in p for p in pin_problems(text)), pin_problems(text)


def test_every_runtime_dependency_of_setup_py_is_pinned_at_an_allowed_version():
    pinned = pins(REQUIREMENTS.read_text())
    for requirement in install_requires():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} (setup.py) is missing from templates/requirements.txt"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} breaks setup.py's {requirement}"
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            assert str(pinned[name]) == exact[0], f"{name}: setup.py pins {exact[0]}, the image {pinned[name]}"


def test_dockerfile_installs_the_hashed_pins_and_the_project_without_dependencies():
    text = DOCKERFILE.read_text()
    installs = [line for line in text.splitlines() if re.search(r"\bpip install\b", line)]
    assert any("--require-hashes" in line and "-r templates/requirements.txt" in line for line in installs), installs
    assert "COPY templates/requirements.txt templates/requirements.txt" in text
    for line in installs:
        assert "--require-hashes" in line or "--no-deps" in line, f"an install that could fetch unhashed code: {line}"
