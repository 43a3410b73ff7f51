"""``innaudit.repair`` is the plain public function, in whatever order the package is imported."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

ORDERS = {
    "api first": "import innaudit; f = innaudit.repair; import innaudit.repair.bounded_scale",
    "submodule first": "import innaudit.repair.bounded_scale; import innaudit; f = innaudit.repair",
    "from-import": "from innaudit.repair.result import RepairResult; from innaudit import repair as f",
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_innaudit_repair_is_the_function_in_any_import_order(order: str) -> None:
    code = ORDERS[order] + (
        "\nimport inspect, types, innaudit; from innaudit.repair import session as s"
        "\nassert f is s.repair and inspect.isfunction(f), f"
        "\nassert innaudit.repair is f and type(sys.modules['innaudit.repair']) is types.ModuleType"
        "\nfrom innaudit.repair import bound_scales; assert callable(bound_scales)"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_function_is_documented_with_its_arguments() -> None:
    import innaudit

    assert inspect.isfunction(innaudit.repair)
    assert {"data", "output", "budget", "seed", "plan_only"} <= set(inspect.signature(innaudit.repair).parameters)
