"""The run report: one dataclass per section, written as ``report.json`` and read back.

Every module that writes or reads a fact of a run goes through these classes, never through
string keys.  ``to_json`` gives the document ``report.json`` holds; ``from_json`` reads one
back (reports written before ``schema_version`` existed read as well: they have the same
sections).  A section that a kind of run does not have (``transform`` on a ``run``,
``incremental`` without ``--incremental``, ``evaluation`` before ``train``) is None and
left out of the document.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from fruits_pipeline.results import layout, storage

#: Version of the document's shape.  2: ``schema_version`` added; sections as in version 1.
SCHEMA_VERSION = 2

#: Metadata of an optional field: left out of the document when it is None.
_OMIT_NONE = {"omit_none": True}


def optional(default=None):
    """A field left out of ``report.json`` while it is None."""
    return field(default=default, metadata=_OMIT_NONE)


@dataclass
class LabelCount:
    featurized: int = 0
    rejected: int = 0


@dataclass
class Counts:
    """How many images a run saw, featurized and rejected, in all, per reason, per label."""

    files_seen: int
    featurized: int
    rejected: int
    csv_rows: int
    rejected_by_reason: dict[str, int]
    per_label: dict[str, LabelCount]


@dataclass
class LinearAlgebra:
    """The BLAS and LAPACK Spark ML used in the driver's JVM."""

    blas: str
    lapack: str
    native: bool
    openblas_threads: str | None


@dataclass
class PcaFacts:
    """The fitted PCA: k, the variance it keeps, pass one's cumulative explained variance."""

    k: int
    variance_threshold: float
    variance_kept: float
    fitted_on_rows: int
    cumulative_explained_variance: list[float]
    linear_algebra: LinearAlgebra | None = None
    #: ``transform`` only: the run whose saved PCA projected the images
    from_model: str | None = optional()


@dataclass
class WeightsFacts:
    """Where the network's weights came from, and their fingerprints."""

    source: str
    kind: str
    meaningful: bool
    file_sha256: str | None
    arrays_sha256: str
    #: ``transform`` only: the weights of the run whose model projects, and the check
    model_source: str | None = optional()
    model_file_sha256: str | None = optional()
    matches_model: bool | None = optional()


@dataclass
class ModelBuilds:
    driver: int
    workers: int


@dataclass
class CnnFacts:
    """The extraction's counters: the CNN's calls, and where the workers' time went."""

    images_inferred: int
    batches: int
    calls_per_image: float
    decode_seconds: float
    inference_seconds: float


@dataclass
class MemoryFacts:
    """Peak memory in MB: each Python worker (by ``HOST:PID``), the driver JVM and Python."""

    python_worker_max: float | None
    python_workers: dict[str, float]
    driver_jvm: float | None
    driver_python: float | None = None


@dataclass
class Settings:
    batch_size: int
    engine: str
    limit: int | None
    master: str
    default_parallelism: int
    #: ``run`` only
    incremental: bool | None = optional()


@dataclass
class Outputs:
    """Where each output is once the run is published (absent ones are None)."""

    features: str
    rejected: str
    csv: str
    report: str
    pca_model: str | None = optional()
    plots: dict[str, str] | None = optional()
    report_html: str | None = optional()
    #: after ``train``
    classifier: str | None = optional()
    #: the quantized feature network the run kept (an int8 engine's)
    network: str | None = optional()

    def names(self) -> list[str]:
        """Return the names written under OUTPUT, folders with a trailing ``/``."""
        written = [f"{layout.FEATURES}/", f"{layout.REJECTED}/"]
        written += [f"{layout.PCA_MODEL}/"] if self.pca_model else []
        written += [f"{layout.CLASSIFIER}/"] if self.classifier else []
        written += [layout.NETWORK] if self.network else []
        written += [layout.CSV]
        written += [f"{layout.PLOTS}/"] if self.plots else []
        written += [layout.REPORT_HTML] if self.report_html else []
        return [*written, layout.REPORT_JSON]


@dataclass
class IncrementalFacts:
    previous_run: bool
    reused: int
    new: int
    changed: int
    removed: int
    #: True when the previous run had a classifier (``train``): trained on other features,
    #: it is not kept
    classifier_removed: bool | None = optional()
    #: why the run at OUTPUT was not reused (none there, or made under another provenance)
    note: str | None = optional()


@dataclass
class ProvenanceFacts:
    """What made a run's features.  Rows made under the same ``key`` are interchangeable:
    ``--resume`` and ``--incremental`` reuse only rows made under the run's own key."""

    #: sha256 over every other field
    key: str
    engine: str
    #: ``PreparedNetwork.sha256``: the exact network the workers ran
    network_sha256: str
    precision: str
    weights_arrays_sha256: str
    #: the package and the libraries that decode and infer
    versions: dict[str, str]
    #: what calibrated a quantized network's bytes (an int8 engine's), else absent
    calibration: str | None = optional()

    def differences(self, theirs: ProvenanceFacts) -> str:
        """Say what differs in ``theirs`` (rows one would reuse) from this provenance:
        ``"engine tensorflow, not onnxruntime; …"``."""
        said = []
        if theirs.engine != self.engine:
            said.append(f"engine {theirs.engine}, not {self.engine}")
        if theirs.weights_arrays_sha256 != self.weights_arrays_sha256:
            said.append("other weights")
        elif theirs.network_sha256 != self.network_sha256:
            said.append("another network from the same weights")
        if theirs.precision != self.precision:
            said.append(f"precision {theirs.precision}, not {self.precision}")
        if theirs.calibration != self.calibration:
            said.append("another calibration")
        said += [
            f"{name} {theirs.versions.get(name, 'absent')}, not {version}"
            for name, version in sorted(self.versions.items())
            if theirs.versions.get(name) != version and theirs.engine == self.engine
        ]
        return "; ".join(said) or "another provenance key"


@dataclass
class FidelityFacts:
    """How close a quantized network's features are to the float32 network's, measured in
    the run on a few of its images."""

    images: int
    #: True when none of them calibrated the network
    held_out: bool
    #: the network compared with
    reference: str
    cosine_median: float
    cosine_min: float
    cosine_mean: float


@dataclass
class CalibrationFacts:
    """How a quantized network was made from the run's own images."""

    precision: str
    #: ``ProvenanceFacts.calibration``: the sha256 over the settings and the sample
    digest: str
    #: images that calibrated, and the sha256 of their sorted paths (one per line)
    images: int
    paths_sha256: str
    #: how it was quantized: format, weights, per_channel, activations, method
    settings: dict[str, str]
    #: the quantized network's sha256 (``ProvenanceFacts.network_sha256``)
    network_sha256: str
    fidelity: FidelityFacts | None = optional()
    #: the run whose kept network was run again (``transform``), not calibrated here
    restored_from: str | None = optional()


@dataclass
class ResumeFacts:
    """``--resume``: what the staging of interrupted runs gave this run."""

    #: rows reused from the staging, and images this run sent through the CNN
    reused: int
    new: int
    #: the interrupted runs whose staged rows were reused, oldest first
    from_runs: list[str]
    #: why nothing was resumed (no staging, or staged under another provenance)
    note: str | None = optional()


@dataclass
class TransformFacts:
    model: str
    model_run_id: str | None
    pca_model: str
    refit: bool


@dataclass
class VisualsFacts:
    """The plots and the page: how many points the scatter shows, or why they failed."""

    scatter_points: int | None = optional()
    seconds: float | None = optional()
    error: str | None = optional()


@dataclass
class ClassScore:
    label: str
    support: int
    recall: float
    precision: float
    f1: float
    confused_with: str | None
    confused_count: int


@dataclass
class SplitFacts:
    split: str
    images: int
    labels: int
    accuracy: float | None = optional()
    unseen_labels: list[str] | None = optional()


@dataclass
class RegularisationTrial:
    """One regularisation tried: the classifier fitted on the rest of the training split,
    scored on its validation part (accuracy, and the mean log-loss that breaks ties)."""

    reg_param: float
    accuracy: float
    log_loss: float


@dataclass
class RegularisationChoice:
    """How ``train`` chose its regularisation on a validation part of the training split."""

    validation_images: int
    rule: str
    tried: list[RegularisationTrial]
    chosen: float


@dataclass
class ClassifierModel:
    """The classifier ``train`` fitted and saved (older reports: the probe's settings)."""

    name: str
    max_iter: int
    reg_param: float
    #: the labels in the order the classifier predicts them (its probability vector's)
    labels: list[str] | None = optional()
    #: where it is saved (``OUTPUT/classifier``)
    location: str | None = optional()
    regularisation: RegularisationChoice | None = optional()


@dataclass
class Evaluation:
    """The classifier's scores on the test split (``train``)."""

    accuracy: float
    macro_f1: float
    meaningful: bool
    note: str
    weights_source: str | None
    train: SplitFacts
    test: SplitFacts
    worst_classes: list[ClassScore]
    model: ClassifierModel
    seconds: float
    evaluated_at: str
    #: the run whose features the classifier was trained on (its ``run_id``)
    features_run_id: str | None = optional()


@dataclass
class RunReport:
    """Everything ``report.json`` says about a run (or a ``transform``)."""

    status: str
    input: str
    output: str
    counts: Counts
    pca: PcaFacts
    weights: WeightsFacts
    model_builds: ModelBuilds
    cnn: CnnFacts
    memory_peak_mb: MemoryFacts
    settings: Settings
    versions: dict[str, str]
    outputs: Outputs
    schema_version: int = SCHEMA_VERSION
    #: "transform" for the report of a ``transform``; absent for a ``run``
    command: str | None = optional()
    transform: TransformFacts | None = optional()
    incremental: IncrementalFacts | None = optional()
    run_id: str | None = optional()
    started_at: str | None = optional()
    finished_at: str | None = optional()
    #: seconds per stage, in the order the stages ran, and ``total``
    seconds: dict[str, float] = field(default_factory=dict)
    visuals: VisualsFacts | None = optional()
    evaluation: Evaluation | None = optional()
    provenance: ProvenanceFacts | None = optional()
    resume: ResumeFacts | None = optional()
    #: a quantized network's calibration (an int8 engine), else absent
    calibration: CalibrationFacts | None = optional()

    @property
    def is_transform(self) -> bool:
        return self.transform is not None


#: The order of the document's top-level keys (``schema_version`` first, then as written
#: since version 1).
_ORDER = (
    "schema_version",
    "status",
    "command",
    "input",
    "output",
    "transform",
    "counts",
    "pca",
    "weights",
    "model_builds",
    "cnn",
    "memory_peak_mb",
    "settings",
    "versions",
    "outputs",
    "incremental",
    "resume",
    "provenance",
    "calibration",
    "run_id",
    "started_at",
    "finished_at",
    "seconds",
    "visuals",
    "evaluation",
)


def to_json(report: RunReport) -> dict:
    """Return ``report`` as the JSON document ``report.json`` holds."""
    document = to_plain(report)
    return {key: document[key] for key in _ORDER if key in document}


def from_json(document: dict) -> RunReport:
    """Return the RunReport of a ``report.json`` document.

    Raises ValueError naming the section when a required fact is missing or malformed.
    """
    return from_plain(RunReport, document, "report")


def to_plain(value):
    """Return a dataclass (nested ones, lists and dicts of them) as plain JSON data; an
    ``optional()`` field is left out while it is None."""
    if dataclasses.is_dataclass(value):
        plain = {}
        for spec in dataclasses.fields(value):
            item = getattr(value, spec.name)
            if item is None and spec.metadata.get("omit_none"):
                continue
            plain[spec.name] = to_plain(item)
        return plain
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    return value


def from_plain(kind, value, where: str):
    """Return plain JSON data as the dataclass (or typed container) ``kind``; raise
    ValueError naming the place (``where``) of a missing or malformed fact."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        if value is None:
            return None
        return from_plain(options[0], value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        arguments = {}
        for spec in dataclasses.fields(kind):
            if spec.name in value:
                arguments[spec.name] = from_plain(
                    hints[spec.name], value[spec.name], f"{where}.{spec.name}"
                )
            elif _required(spec):
                raise ValueError(f"{where}.{spec.name} is missing")
        return kind(**arguments)
    if origin is dict:
        _, item_kind = typing.get_args(kind)
        return {key: from_plain(item_kind, item, f"{where}.{key}") for key, item in value.items()}
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        return [from_plain(item_kind, item, f"{where}[]") for item in value]
    return value


def _required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def read_report(uri: str) -> RunReport:
    """Read the ``report.json`` at ``uri`` (local or ``s3://``)."""
    return from_json(storage.read_json(uri))


def write_report(uri: str, report: RunReport) -> None:
    """Write ``report`` as ``report.json`` at ``uri`` (local or ``s3://``)."""
    storage.write_json(uri, to_json(report))
