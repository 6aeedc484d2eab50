"""Tables as text, written one way: a number for reading, a CSV file, a Markdown table.

CSV cells keep every bit (floats with `repr`, so a file reads back to the same numbers);
Markdown cells are for reading (`fmt`: a few significant digits).
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def fmt(value: Any, digits: int = 4, missing: str = "") -> str:
    """A value for a table: floats to `digits` significant digits ("nan", "inf", "-inf" spelled
    out), integers whole, None as `missing`, anything else as its text."""
    if value is None:
        return missing
    if isinstance(value, numbers.Integral):  # bool too
        return str(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        return "nan" if math.isnan(x) else f"{x:.{digits}g}"
    return str(value)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) or (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)):
        return repr(float(value))
    return value


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """`rows` as CSV with a header of `columns`: floats with repr precision (they read back
    exactly), None as an empty cell, a column a row lacks as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _markdown_cell(value: Any, digits: int) -> str:
    return fmt(value, digits).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (tabulate's "github" format), cells through `fmt`."""
    from tabulate import tabulate

    body = [[_markdown_cell(v, digits) for v in row] for row in rows]
    return tabulate(body, headers=[_markdown_cell(h, digits) for h in headers], tablefmt="github",
                    disable_numparse=True)
