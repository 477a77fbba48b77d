"""Every name a run writes under OUTPUT, defined once.

The writer, the readers (``transform``, ``train``, ``export``, incremental runs), the report
page and the EMR submitter's links all take their names from here.  No imports: the
submitter and the command line use it without loading Spark.
"""

from __future__ import annotations

#: parquet, one row per valid image (identity, ``features``, ``pca_features``)
FEATURES = "features"
#: parquet, one row per image that could not be used (identity, ``error``)
REJECTED = "rejected"
#: the fitted scaler + PCA, a Spark ML ``PipelineModel``
PCA_MODEL = "pca_model"
#: ``path``, ``label``, ``pc_1`` … ``pc_k``, sorted by path, for plots and spreadsheets
CSV = "features_pca.csv"
#: while ``CSV`` is made: its lines, formatted and written by the executors in path order,
#: one text file per partition, joined into ``CSV`` and removed (results/writer.py)
CSV_PARTS = "_features_pca.csv.parts"
#: the quantized ONNX feature network the run's features came from (an int8 engine's,
#: calibrated on the run's images): ``transform`` and ``export`` run it as it is
NETWORK = "feature_network.onnx"
#: PNG plots
PLOTS = "plots"
#: the run's facts (see results/report.py)
REPORT_JSON = "report.json"
#: the self-contained page of the report, plots embedded
REPORT_HTML = "report.html"
#: ``train``'s classifier on ``pca_features``, a Spark ML ``PipelineModel``
#: (LogisticRegression, then IndexToString with the labels in the order it predicts)
CLASSIFIER = "classifier"
#: written last: a folder or prefix without it is not a finished run
SUCCESS = "_SUCCESS"
#: the extraction's rows while a run is in progress (the CNN's output, read by the PCA), in
#: units under the staging (results/staging.py); removed before the run is published
EXTRACTED = "extracted.incomplete"
#: under the staging: the provenance of the staged rows and the runs that staged them
STAGING_MANIFEST = "staging.json"

#: In every folder the tool makes (OUTPUT, its staging, export's DIR), written first: only a
#: folder that carries it may be replaced by ``--overwrite`` or removed (results/owned.py)
OWNER_MARKER = ".fruits-pipeline.json"

#: Hidden siblings of OUTPUT (``.NAME`` + suffix): the staging of the run in progress, or
#: of one that died (``--resume`` picks it up), and the lock of the run writing OUTPUT.
STAGING_SUFFIX = ".incomplete"
LOCK_SUFFIX = ".lock"

#: plot file names under ``PLOTS``
EXPLAINED_VARIANCE_PNG = "explained_variance.png"
PCA_SCATTER_PNG = "pca_scatter.png"
LABELS_PNG = "labels.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"

#: What ``train`` adds to a run, made from its features: a run that changes the features
#: (``--incremental``) must not keep them.
TRAINED_ON_FEATURES = (CLASSIFIER, f"{PLOTS}/{CONFUSION_MATRIX_PNG}")

#: What ``export --to DIR`` writes: the on-device models, one per format, and their card.
ONNX_MODEL = "fruits_classifier.onnx"
TFLITE_FLOAT32_MODEL = "fruits_classifier_float32.tflite"
TFLITE_INT8_MODEL = "fruits_classifier_int8.tflite"
MODEL_CARD = "model_card.json"
#: the model card's golden images, copied from the test split
GOLDEN_IMAGES = "golden"

#: Files a reviewer gets a link to, with the type a browser is told to show them as.
SHAREABLE = {
    CSV: "text/csv; charset=utf-8",
    REPORT_HTML: "text/html; charset=utf-8",
    REPORT_JSON: "application/json",
}
