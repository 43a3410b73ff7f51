"""The commented default configuration that ``innaudit init`` writes."""

from __future__ import annotations

from collections.abc import Mapping

from innaudit.config.settings import AuditSpec
from innaudit.core.metrics import Direction

__all__ = ["default_config_text"]

HEADER = """\
# innaudit configuration. Command-line flags override these values; unknown keys are errors.
# Thresholds: a metric above `warn` warns, above `fail` fails (higher is worse); null disables a level.

seed: 0                # every random draw derives from (seed, audit id)
samples: 10000         # at most this many samples per data set (the paper uses 10,000 per OOD set)
batch_size: auto       # or a number; auto = the largest batch whose activations fit free memory (<= 500)
budget: null           # a time budget (90s, 10m, 1h): samples per audit are sized to fit it
device: cpu            # cpu, cuda, cuda:N
float64_check: false   # repeat round trips in float64: tells precision loss from ill-conditioning
default_ood: true       # with no ood sets below, run the noise battery (false: no held-out sets)
fail_on: fail          # fail: only FAIL fails the gate; warn: WARN fails it too
data: null             # in-distribution SPEC; null = the model's own test set when it names one
ood: []                # [NAME=]SPEC list; [] = the paper's noise battery (uniform, gaussian, rademacher)
audits: []             # run only these ids; [] = all (see `innaudit list`)
skip: []               # leave these ids out
allow_mutation: false  # true: audit a model that rewrites its parameters while audited (else exit 2)
range: null            # [LOW, HIGH] of a model that declares no data range; null = from --data
levels: null           # its quantization levels; null = inferred from --data (k/(N-1) grid)
"""


def _number(value: float | None) -> str:
    return "null" if value is None else repr(float(value))


def _section(spec: AuditSpec) -> list[str]:
    lines = [
        f"{spec.id}:                  # `innaudit explain {spec.id}`",
        "  thresholds:" if spec.thresholds else "  thresholds: {}",
    ]
    for metric, t in spec.thresholds.items():
        lines.append(f"    {metric}: {{warn: {_number(t.warn)}, fail: {_number(t.fail)}}}")
    for name, value in spec.options.items():
        shown = list(value) if isinstance(value, tuple) else value
        lines.append(
            f"  {name}: {shown!r}".replace("'", '"')
            .replace("True", "true")
            .replace("False", "false")
            .replace("None", "null")
        )
    lines.append("  # sets: {uniform: {thresholds: {nonfinite_fraction: {fail: 0.5}}}}  # per-set overrides")
    metrics = ", ".join(m.path for m in spec.metrics if m.direction is not Direction.NEITHER)
    lines.append(f"  # metrics that take thresholds (a summary as PATH.max, .p99, .median): {metrics}")
    return lines


def default_config_text(specs: Mapping[str, AuditSpec]) -> str:
    """YAML text with every setting at its default, with comments."""
    body = [HEADER]
    for spec in specs.values():
        body.append("\n".join(_section(spec)) + "\n")
    return "\n".join(body)
