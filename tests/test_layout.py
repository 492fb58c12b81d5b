"""Architecture rules that a reader relies on."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nasps"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, by its full dotted name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_runtime_package_imports_ray():
    """And nasps.tune, the Ray Tune searcher, which imports Ray Tune alone; no other module
    imports it, so `import nasps` and the search without Ray never load Ray."""
    tune = PACKAGE / "tune.py"
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "ray" in imported_modules(p) and p.parent.name != "runtime" and p != tune]
    assert offenders == []
    assert "ray" in imported_modules(PACKAGE / "runtime" / "driver.py")
    assert {n for n in imported_names(tune) if n.split(".")[0] == "ray"} == {"ray.tune.search"}
    assert [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "nasps.tune" in imported_names(p)] == []


def test_architectures_and_config_never_touch_torch():
    files = [PACKAGE / name for name in ["config.py", "state/store.py", "state/ledger.py", "api.py", "__init__.py"]]
    for path in files + sorted((PACKAGE / "spaces").glob("*.py")):
        assert "torch" not in imported_modules(path), path


def test_importing_nasps_loads_neither_ray_nor_torch():
    """Every Ray worker imports the package: one scoring children with a plain function stays small."""
    import subprocess
    import sys
    probe = "import sys, nasps; nasps.Config; print(sorted({'ray', 'torch', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_readme_documents_every_config_key():
    from nasps.config import describe
    readme = (PACKAGE.parent / "README.md").read_text()
    missing = [key for key, _, _ in describe() if f"| `{key}` |" not in readme]
    assert missing == []
