"""``innaudit.repair`` is the plain public function, in whatever order and form the remedies
package (``innaudit.remedies``) is imported."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

ORDERS = {
    "api first": "import innaudit; f = innaudit.repair; import innaudit.remedies.bounded_scale",
    "submodule first": "import innaudit.remedies.bounded_scale; import innaudit; f = innaudit.repair",
    "from-import": "from innaudit.remedies.result import RepairResult; from innaudit import repair as f",
    "import-as": "import innaudit; f = innaudit.repair; import innaudit.remedies.rules as rules; assert rules.REMEDY_RULES",
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_innaudit_repair_is_the_function_in_any_import_order(order: str) -> None:
    code = ORDERS[order] + (
        "\nimport inspect, types, innaudit; from innaudit.remedies import session as s"
        "\nassert f is s.repair and inspect.isfunction(f), f"
        "\nassert innaudit.repair is f and type(sys.modules['innaudit.remedies']) is types.ModuleType"
        "\nfrom innaudit.remedies import bound_scales; assert callable(bound_scales)"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_function_is_documented_with_its_arguments() -> None:
    import innaudit

    assert inspect.isfunction(innaudit.repair)
    assert {"data", "output", "budget", "seed", "plan_only"} <= set(inspect.signature(innaudit.repair).parameters)
