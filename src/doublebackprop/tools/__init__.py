"""Tools around the engine: benchmarks, operator counts, loss landscapes, the engines demo and
the zoo of reference networks they run on. The top layer: it may import every other area."""

from doublebackprop.tools import zoo
from doublebackprop.tools.bench import (
    BenchCase,
    BenchRow,
    default_cases,
    format_table,
    run_benchmark,
)
from doublebackprop.tools.complexity import ComplexityRow, complexity_table, format_markdown
from doublebackprop.tools.engines_demo import DemoRow, format_rows, run_engine_demo
from doublebackprop.tools.landscape import (
    LineScan,
    jump_statistic,
    random_direction,
    refinement_ratio,
    scan_line,
)

__all__ = [
    "BenchCase",
    "BenchRow",
    "ComplexityRow",
    "DemoRow",
    "LineScan",
    "complexity_table",
    "default_cases",
    "format_markdown",
    "format_rows",
    "format_table",
    "jump_statistic",
    "random_direction",
    "refinement_ratio",
    "run_benchmark",
    "run_engine_demo",
    "scan_line",
    "zoo",
]
