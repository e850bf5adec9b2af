"""Apps import in one direction (STYLE.md's floors): tenancy and RAM at the bottom, then keys and
the catalog, then usage, then billing, then the APIs, admin, pages and commands on top. The
contract lives in pyproject.toml ([tool.importlinter]); these tests run it, and fail when a
module of ours stands on no floor (so a new module is placed, not silently unchecked)."""

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _floors() -> list[set[str]]:
    (contract,) = _config()["contracts"]
    return [{name.strip() for name in layer.replace("|", ":").split(":")} for layer in contract["layers"]]


def _our_modules() -> list[str]:
    modules = []
    for package in _config()["root_packages"]:
        modules.append(package)
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            modules.append(info.name)
    return modules


def _floor_of(module: str, floors: list[set[str]]) -> list[int]:
    return [index for index, floor in enumerate(floors)
            if any(module == name or module.startswith(name + ".") for name in floor)]


def test_no_import_runs_up_a_floor():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_module_of_ours_stands_on_exactly_one_floor():
    floors = _floors()
    unplaced, doubled = [], []
    for module in _our_modules():
        if module in _config()["root_packages"] or module.endswith(".__init__"):
            continue
        found = _floor_of(module, floors)
        if not found and not any(other.startswith(module + ".") for other in _our_modules()):
            unplaced.append(module)
        if len(found) > 1:
            doubled.append(module)
    assert not unplaced, f"modules on no floor (add them to [tool.importlinter] in pyproject.toml): {unplaced}"
    assert not doubled, f"modules on two floors: {doubled}"


def test_the_floors_are_in_the_documented_order():
    floors = _floors()
    assert "portal.models" in floors[-1] and "portal.ram" in floors[-1]
    assert {"keys.services", "billing.catalog", "billing.models"} <= floors[-2]
    assert {"usage.query", "usage.services"} <= floors[-3]
    assert {"billing.selectors", "billing.services"} <= floors[-4]
    assert {"portal.api", "usage.api", "keys.api", "billing.api"} <= floors[0]
