"""The lines of ``features_pca.csv``, made from arrow batches in the Python workers.

Pure functions of arrow arrays (no Spark, no I/O), vectorised in Arrow's C++ kernels: a
number is formatted by Arrow's cast (the shortest decimal that reads back as the same
float32), then put in the notation Java's ``Float.toString`` uses, which is what the file
has always had (Spark cast each float to a string): ``0.5``, ``12.0``, ``1.2345679E-5``.
Doing this per row in Python, or with Spark's casts, was most of the write stage
(docs/performance.md).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fruits_pipeline.results.arrays import array_matrix, row_offsets

#: The CSV's line end: Python's ``csv`` module's, which the file had when the driver wrote it.
LINE_END = "\r\n"

#: Java writes a float in plain decimals when its magnitude is in [1e-3, 1e7) or it is 0;
#: in computerized scientific notation otherwise.
PLAIN_LOW = np.float32(1e-3)
PLAIN_HIGH = np.float32(1e7)


def header(k: int) -> str:
    """Return the CSV's first line: ``path``, ``label``, ``pc_1`` … ``pc_k``."""
    return ",".join(["path", "label", *[f"pc_{i}" for i in range(1, k + 1)]]) + LINE_END


def java_scientific(value: np.float32) -> str:
    """Return ``value`` as Java's ``Float.toString`` writes it outside [1e-3, 1e7): the
    shortest digits, one before the point, at least one after it, ``E`` and the exponent
    (``1.2345679E-5``, ``1.0E7``); ``NaN``, ``Infinity``, ``-Infinity``."""
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = np.format_float_scientific(value, unique=True, trim="0", exp_digits=1)
    mantissa, exponent = text.split("e")
    return f"{mantissa}E{int(exponent)}"


def float_text(values: np.ndarray) -> pa.StringArray:
    """Return each float32 of ``values`` (1-D) as Java's ``Float.toString`` writes it."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    text = pc.cast(pa.array(values), pa.string())
    magnitude = np.abs(values)
    plain = ((magnitude >= PLAIN_LOW) & (magnitude < PLAIN_HIGH)) | (values == 0)
    # In Java's plain range Arrow writes plain decimals too, but a whole number without the
    # fraction Java always shows: only those, and the numbers outside the range, differ.
    whole = plain & (values == np.trunc(values))
    differ = np.flatnonzero(whole | ~plain)
    if differ.size:
        arrow_text = pc.take(text, pa.array(differ)).to_pylist()
        java = [
            arrow + ".0" if whole[i] else java_scientific(values[i])
            for i, arrow in zip(differ, arrow_text, strict=True)
        ]
        mask = np.zeros(values.size, dtype=bool)
        mask[differ] = True
        text = pc.replace_with_mask(text, pa.array(mask), pa.array(java, pa.string()))
    return text


def csv_field(text: pa.Array) -> pa.Array:
    """Return each string of ``text`` as one field of Python's ``csv`` writer (minimal
    quoting): quoted, its quotes doubled, when it holds a comma, a quote, a carriage return
    or a line feed; as it is otherwise.  A null is the empty field."""
    text = pc.fill_null(text, "")
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.if_else(pc.match_substring_regex(text, '[,"\r\n]'), quoted, text)


def csv_lines(path: pa.Array, label: pa.Array, values: pa.ListArray, k: int) -> bytes:
    """Return the CSV lines of one batch, each ended by ``LINE_END``, as UTF-8 bytes:
    ``path``, ``label`` and the ``k`` floats of each row's ``values``.

    Raises ValueError when a row does not hold exactly ``k`` values."""
    matrix = array_matrix(values)
    rows = len(matrix)
    if rows == 0:
        return b""
    if matrix.shape[1] != k:
        raise ValueError(f"every row must hold {k} values, not {matrix.shape[1]}")
    numbers = pa.ListArray.from_arrays(row_offsets(rows, k), float_text(matrix.ravel()))
    lines = pc.binary_join_element_wise(
        csv_field(path), csv_field(label), pc.binary_join(numbers, ","), ","
    )
    return LINE_END.join([*lines.to_pylist(), ""]).encode("utf-8")
