"""The house rules of docs/architecture.md, checked on the source tree.

Imports point one way: the library `setnet` imports neither application, `pipelines` never imports
`serving`, and no production module imports test support. Importing the library's core loads none
of the applications' heavy dependencies.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("setnet", "pipelines", "serving")
# Which top-level packages each package may import (besides itself and third-party libraries).
ALLOWED = {
    "setnet": set(),
    "pipelines": {"setnet"},
    "serving": {"setnet", "pipelines"},
}
# The library's own third-party imports: anything else must be imported lazily inside a function
# (and documented as an optional extra), never at module level.
LIBRARY_THIRD_PARTY = {"numpy", "scipy", "keras", "tensorflow"}
TEST_SUPPORT = ("tests", "setnet.teleport.testing")


def is_test_file(path: pathlib.Path) -> bool:
    return path.name.endswith("_test.py") or path.name.startswith("test_") or path.name == "conftest.py"


def imports(path: pathlib.Path, top_level_only: bool = False):
    """Yields (module name, line, at module level) for every import statement in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        at_top = id(node) in module_level
        if top_level_only and not at_top:
            continue
        for name in names:
            yield name, node.lineno, at_top


def sources(package: str, tests: bool):
    for path in sorted((ROOT / package).rglob("*.py")):
        if is_test_file(path) == tests:
            yield path


def test_every_package_imports_only_what_the_architecture_allows():
    wrong = []
    for package in PACKAGES:
        for path in [*sources(package, tests=False), *sources(package, tests=True)]:
            for name, line, _ in imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != package and top not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "imports against the dependency direction:\n" + "\n".join(wrong)


def test_no_production_module_imports_test_support():
    wrong = []
    for package in PACKAGES:
        for path in sources(package, tests=False):
            for name, line, _ in imports(path):
                if any(name == t or name.startswith(t + ".") for t in TEST_SUPPORT):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "production modules importing test helpers:\n" + "\n".join(wrong)


def test_library_modules_import_only_the_core_dependencies_at_module_level():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = []
    for path in sources("setnet", tests=False):
        for name, line, _ in imports(path, top_level_only=True):
            top = name.split(".")[0]
            if top not in stdlib and top not in LIBRARY_THIRD_PARTY and top != "setnet":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "library modules importing beyond numpy/scipy/keras/tensorflow:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_checks_see_the_tree(package):
    # Guards the checks above against passing vacuously on a moved or renamed tree.
    assert sum(1 for _ in sources(package, tests=False)) >= 5


# What the applications bring in. Keras itself imports matplotlib and scikit-learn when they are
# installed (keras.src.visualization, keras.src.wrappers), so their presence in sys.modules says
# nothing about setnet; the second test proves the library works with all of them absent.
APPLICATION_ONLY = ["mlflow", "starlette", "uvicorn", "tensorflow_datasets", "optuna", "orjson",
                    "httpx", "yaml", "tqdm", "pipelines", "serving"]
ABSENT_IN_A_LEAN_INSTALL = APPLICATION_ONLY + ["matplotlib", "sklearn", "pandas", "PIL"]
CORE_IMPORT = "import setnet.layers, setnet.symmetry, setnet.models\n"


def run_python(code: str):
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_importing_the_library_core_loads_no_application_dependency():
    loaded = run_python("import sys\n" + CORE_IMPORT
                        + f"print(','.join(m for m in {APPLICATION_ONLY!r} if m in sys.modules))\n")
    assert loaded == "", f"{CORE_IMPORT.strip()} loaded: {loaded}"


def test_the_library_core_works_without_any_application_dependency():
    # A lean install (`pip install setnet[cpu]`) has none of these; simulate it by refusing them.
    code = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {ABSENT_IN_A_LEAN_INSTALL!r}\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        + CORE_IMPORT +
        "import numpy as np\n"
        "from setnet.layers import PermEquivariantLinear, PermEquivariantQuadratic\n"
        "x = np.zeros((2, 16, 3), 'float32')\n"
        "print(tuple(PermEquivariantQuadratic(5)(PermEquivariantLinear(4)(x)).shape))\n"
    )
    assert run_python(code).splitlines()[-1] == "(2, 16, 5)"
