"""`orbitbench models [PATTERN]`: the registered models as a table, timm's `list_models` for people."""

from __future__ import annotations

from orbitbench.models._registry import TIMM_PREFIX, list_models, model_info


def models(pattern: str = "*") -> str:
    """List the models whose names match PATTERN (fnmatch wildcards: 'paper*', '*mlp*').

    Zoo models, installed packages' `orbitbench.models` entry points and ORBITBENCH_MODELS_PATH
    folders; besides these, `timm:<timm model name>`, `c4_pooled(<model>)` and
    `package.module:builder` are accepted wherever a model name is.

    Args:
        pattern: fnmatch pattern of model names (default: all).
    """
    names = list_models(pattern)
    if not names:
        return f"no model matches {pattern!r} (`orbitbench models` lists them all; also accepted: {TIMM_PREFIX}<name>)"
    rows = [("model", "kernel twin", "invariance", "classifier", "source")]
    for name in names:
        info = model_info(name)
        twin = info.kernel_twin()
        if isinstance(twin, str):
            shown = "none"
        elif twin.arch != "mlp":
            shown = f"{twin.arch.upper().replace('_', '-')} {twin.kernel_size}x{twin.kernel_size}x{twin.channels}"
        else:
            shown = f"ReLU MLP {'-'.join(map(str, (twin.in_features, *twin.widths)))}"
        rows.append((name, shown, info.invariance, info.classifier or "undeclared", info.source))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
