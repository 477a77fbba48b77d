"""Which images train the classifier and which test it: the split folders of a Fruits-360
tree (``…/Training/<label>/x.jpg``, ``…/Test/<label>/x.jpg``), and a deterministic
validation part of the training split on which ``train`` chooses its regularisation."""

from __future__ import annotations

from pyspark.sql import Column, Window
from pyspark.sql import functions as F

from fruits_pipeline.chain.listing import path_parts

#: One training image in this many, in each label, is held out for validation.
VALIDATION_EVERY = 5


def split_column(path_col: str, train: str, test: str) -> Column:
    """Spark column: ``"train"``, ``"test"`` or null, from the folders above an image's label
    folder.  When both names appear in a path, the one nearest to the image wins."""
    parts = path_parts(path_col)
    above_label = F.reverse(F.slice(parts, 1, F.greatest(F.size(parts) - 2, F.lit(0))))
    near_train = F.array_position(above_label, train)
    near_test = F.array_position(above_label, test)
    return (
        F.when((near_train > 0) & ((near_test == 0) | (near_train < near_test)), F.lit("train"))
        .when(near_test > 0, F.lit("test"))
        .otherwise(F.lit(None).cast("string"))
    )


def validation_column(path_col: str, label_col: str, every: int = VALIDATION_EVERY) -> Column:
    """Spark column: True for one image in ``every`` of each label, the same ones on every
    run (ordered by a hash of the path, which Spark computes the same everywhere), so that
    every label is in the validation part and keeps most of its images for training; a
    label with fewer than ``every`` images keeps them all."""
    order = Window.partitionBy(label_col).orderBy(F.xxhash64(path_col), path_col)
    return F.row_number().over(order) % every == 0
