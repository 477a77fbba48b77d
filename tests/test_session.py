"""The versions a run reports, read from the installed distributions' metadata."""

from __future__ import annotations

import pytest

from fruits_pipeline.session import installed_version, versions


@pytest.mark.spark
def test_the_reported_versions_are_the_imported_libraries(spark):
    import keras
    import numpy
    import PIL
    import pyarrow
    import tensorflow

    reported = versions(spark)
    assert reported["tensorflow"] == tensorflow.__version__
    assert reported["keras"] == keras.__version__
    assert reported["numpy"] == numpy.__version__
    assert reported["pillow"] == PIL.__version__
    assert reported["pyarrow"] == pyarrow.__version__
    assert reported["spark"] == spark.version


def test_a_version_of_nothing_installed_names_what_was_looked_for():
    from importlib.metadata import PackageNotFoundError

    with pytest.raises(PackageNotFoundError, match="no-such-dist or nor-this"):
        installed_version("no-such-dist", "nor-this")
    assert installed_version("no-such-dist", "numpy") == installed_version("numpy")
