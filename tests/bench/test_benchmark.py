"""The benchmark's arithmetic, and its notebook-style baseline on a few real JPEGs."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from image_files import jpeg_bytes, noise_image

from fruits_pipeline.bench.benchmark import compare_with_notebook
from fruits_pipeline.bench.notebook_baseline import run_notebook_job
from fruits_pipeline.chain.weights import load_weights, parse_weights_spec


def test_compare_with_notebook():
    job = {"spark_start": 2.0, "extract": 40.0, "pca": 5.0, "total": 50.0}
    notebook = {"spark_start": 2.0, "extract": 120.0, "pca": 20.0, "total": 150.0}
    assert compare_with_notebook(job, notebook) == {
        "whole_job_speedup": 3.0,
        "pca_speedup": 4.0,
        "pca_fraction_of_notebook": 0.25,
    }


@pytest.mark.spark
def test_notebook_baseline_runs_the_chain(spark, weights_files, tmp_path):
    for label, seeds in (("Kiwi", range(4)), ("Lemon", range(4, 7))):
        folder = tmp_path / "images" / label
        folder.mkdir(parents=True)
        for seed in seeds:
            (folder / f"{seed}.jpg").write_bytes(jpeg_bytes(noise_image(seed)))
    arrays = load_weights(parse_weights_spec(str(weights_files["legacy"]))).arrays

    # 3 partitions, not the notebook's 20: each builds the network once, the slow part here;
    # one more than local[2]'s Python workers, so that a build per worker would fail the test
    result = run_notebook_job(
        spark, "file:" + str(tmp_path / "images"), str(tmp_path / "out"), arrays, partitions=3
    )

    assert result["featurized"] == 7
    assert result["cnn_calls_per_image"] == 1.0
    # one per partition of its repartition, empty ones included: the notebook's cost
    assert result["model_builds_workers"] == 3
    assert 1 <= result["k"] <= 7
    assert set(result["seconds"]) == {"model", "extract", "pca", "write"}
    table = pd.read_csv(tmp_path / "out" / "features.csv")
    assert list(table.columns) == ["label", "pca_features"] and len(table) == 7
    assert sorted(table["label"]) == ["Kiwi"] * 4 + ["Lemon"] * 3


def test_the_scale_tree_is_hard_links_under_copies_of_the_input(tmp_path):
    from fruits_pipeline.bench.scale import link_tree

    source = tmp_path / "sample"
    for label, name in (("Kiwi", "1.jpg"), ("Kiwi", "2.png"), ("Pêche [x]", "3.JPG")):
        (source / "Training" / label).mkdir(parents=True, exist_ok=True)
        (source / "Training" / label / name).write_bytes(jpeg_bytes(noise_image(len(name))))
    (source / "Training" / "Kiwi" / "notes.txt").write_text("not an image")
    (source / ".hidden").mkdir()
    (source / ".hidden" / "4.jpg").write_bytes(b"")

    assert link_tree(source, tmp_path / "tree", 3) == 9

    linked = sorted(p for p in (tmp_path / "tree").rglob("*") if p.is_file())
    assert len(linked) == 9
    for path in linked:
        copy, *rest = path.relative_to(tmp_path / "tree").parts
        assert copy in {"copy-00", "copy-01", "copy-02"}
        assert path.samefile(source.joinpath(*rest))  # the same file, no bytes copied


def test_the_scale_ratios():
    from fruits_pipeline.bench.scale import SizeFigures, compare

    small = SizeFigures(
        images=8240,
        extract_images_per_s=120.0,
        seconds={"extract": 68.7, "write": 5.0, "total": 100.0},
        write_share=0.05,
        driver_python_mb=1400.0,
        driver_jvm_mb=1300.0,
        python_worker_max_mb=400.0,
    )
    big = replace(small, images=82400, driver_python_mb=1470.0, python_worker_max_mb=None)

    ratios = compare(small, big)

    assert ratios["images"] == 10.0
    assert ratios["extract_images_per_s"] == 1.0
    assert ratios["driver_python_mb"] == 1.05
    assert ratios["python_worker_max_mb"] is None
