"""Arrow list arrays of floats and numpy matrices, one row each way: how the Python workers
hand the job's feature arrays to numpy and back without a Python object per value."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def array_matrix(column: pa.ListArray) -> np.ndarray:
    """Return a list array whose rows all hold the same number of floats as a rows x n
    matrix.  Raises ValueError for rows of different lengths or a null row."""
    lengths = np.asarray(column.value_lengths().fill_null(-1))
    if len(lengths) and (lengths[0] < 0 or not (lengths == lengths[0]).all()):
        raise ValueError(f"rows of different lengths or nulls: {sorted(set(lengths.tolist()))}")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), -1 if len(column) else 0)


def matrix_array(matrix: np.ndarray) -> pa.ListArray:
    """Return the rows of a matrix as a list array of float32."""
    rows, width = matrix.shape
    return pa.ListArray.from_arrays(row_offsets(rows, width), matrix.astype(np.float32).ravel())


def row_offsets(rows: int, width: int) -> pa.Int32Array:
    """Return the offsets of a list array of ``rows`` rows of ``width`` values each."""
    return pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
