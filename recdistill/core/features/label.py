"""The label of a schema file's `source.label`: a 0/1 column, or a small expression over columns (comparisons,
`in`, `and`, `or`, `not`), parsed with `ast` and evaluated column-wise; nothing else is allowed."""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import pandas as pd

from recdistill.core.errors import SchemaError

_COMPARE = {ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
            ast.Eq: np.equal, ast.NotEq: np.not_equal}


def _label_tree(expression: str) -> ast.expr:
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"label expression `{expression}` does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        allowed = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load, ast.And, ast.Or,
                   ast.Not, ast.USub, ast.List, ast.Tuple, ast.In, ast.NotIn, *_COMPARE)
        if not isinstance(node, allowed):
            raise ValueError(f"label expression `{expression}`: `{ast.unparse(node)}` is not allowed "
                             "(use column names, numbers, strings, comparisons, in, and, or, not)")
    return tree


def label_columns(expression: str) -> list[str]:
    """The columns the label expression reads (raises ValueError if it does not parse)."""
    return sorted({node.id for node in ast.walk(_label_tree(expression)) if isinstance(node, ast.Name)})


def maybe_numeric(column: pd.Series) -> pd.Series:
    """A column read as text (CSV) as numbers, if every present value is one."""
    if not (column.dtype == object or pd.api.types.is_string_dtype(column.dtype)):  # pandas 3 reads text as `str`
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().sum() == column.notna().sum() else column


def evaluate_label(expression: str, frame: pd.DataFrame) -> np.ndarray:
    """The label (int8 0/1) of every row; a bare column must already hold only 0 and 1."""
    missing = [column for column in label_columns(expression) if column not in frame]
    if missing:
        raise SchemaError(f"source.label `{expression}` reads column(s) {missing} that the data lacks")

    def value(node: ast.expr) -> Any:
        match node:
            case ast.Name(id=column):
                return maybe_numeric(frame[column]).to_numpy()
            case ast.Constant(value=constant):
                return constant
            case ast.List(elts=items) | ast.Tuple(elts=items):
                return [value(item) for item in items]
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return ~np.asarray(value(operand), dtype=bool)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -value(operand)
            case ast.BoolOp(op=op, values=values):
                parts = [np.asarray(value(v), dtype=bool) for v in values]
                combine = np.logical_and if isinstance(op, ast.And) else np.logical_or
                out = parts[0]
                for part in parts[1:]:
                    out = combine(out, part)
                return out
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                out, current = None, value(left)
                for op, right in zip(ops, comparators, strict=True):
                    other = value(right)
                    if isinstance(op, ast.In | ast.NotIn):
                        result = pd.Series(current).isin(other).to_numpy()
                        result = ~result if isinstance(op, ast.NotIn) else result
                    else:
                        result = _COMPARE[type(op)](current, other)
                    out = result if out is None else out & result
                    current = other
                return out
        raise SchemaError(f"source.label `{expression}`: cannot evaluate `{ast.unparse(node)}`")

    try:
        result = value(_label_tree(expression))
    except ValueError as exc:
        raise SchemaError(f"source.label: {exc}") from None
    except TypeError as exc:
        raise SchemaError(f"source.label `{expression}`: {exc} (compare numbers with numbers)") from None
    labels = np.asarray(result)
    if labels.dtype != bool:
        numeric = pd.to_numeric(pd.Series(labels), errors="coerce")
        if numeric.isna().any() or not numeric.isin([0, 1]).all():
            raise SchemaError(f"source.label `{expression}` must give 0 or 1 for every row")
        labels = numeric.to_numpy()
    return labels.astype(np.int8)
