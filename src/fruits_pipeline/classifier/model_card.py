"""The model card: the JSON file ``export`` writes beside the on-device models.

It says what an app needs to run them and check them: the labels in output order, the input
(uint8 RGB, NHWC, dynamic batch), how to resize, where the weights came from (sha256), how
well the classifier did on the test split, each file's size and one-core latency, and golden
vectors: a few test images (copied under ``golden/``) with every model's expected top-5.
Written and read through the report's dataclass machinery (``to_plain``, ``from_plain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fruits_pipeline.results import storage
from fruits_pipeline.results.report import from_plain, to_plain

#: What a card is; bump the number when a field changes meaning.
SCHEMA = "fruits-pipeline model card 1"


@dataclass
class InputSpec:
    """Every exported model's input (ONNX and TFLite alike, float32 and int8)."""

    dtype: str = "uint8"
    shape: list[str | int] = field(default_factory=lambda: ["N", 224, 224, 3])
    layout: str = "NHWC"
    channels: str = "RGB"
    values: str = "raw pixels 0..255: the model scales them (x / 127.5 - 1) itself"


@dataclass
class OutputSpec:
    dtype: str
    shape: list[str | int]
    meaning: str


@dataclass
class ResizeRule:
    """How the job turns an image file into the model's input (``chain.images``)."""

    width: int
    height: int
    filter: str
    steps: list[str]


@dataclass
class NetworkFacts:
    """The network that made the run's features, which every exported model contains."""

    architecture: str
    precision: str
    engine: str
    weights_source: str
    weights_file_sha256: str | None
    weights_arrays_sha256: str


@dataclass
class ClassifierFacts:
    """The classifier ``train`` fitted, and its scores on the test split."""

    test_accuracy: float
    macro_f1: float
    test_split: str
    test_images: int
    train_images: int
    reg_param: float
    meaningful: bool
    run_id: str | None


@dataclass
class ModelFile:
    """One exported model: what it is, its size, and its latency per image on one core."""

    file: str
    format: str
    precision: str
    bytes: int
    sha256: str
    input_name: str
    output_name: str
    runtime: str
    latency_ms_per_image: float


@dataclass
class LatencyMeasure:
    """How ``latency_ms_per_image`` was measured."""

    batch: int
    threads: int
    cores: int
    runs: int
    statistic: str
    cpu: str


@dataclass
class Prediction:
    label: str
    probability: float


@dataclass
class GoldenVector:
    """A test image, copied beside the models, and what each model gives for it."""

    image: str
    source: str
    label: str
    #: sha256 of the decoded, resized uint8 pixels (224x224x3, RGB, row-major): the same
    #: number means the same resize
    resized_sha256: str
    #: model file -> its top 5 (label, probability), most probable first
    expected_top5: dict[str, list[Prediction]]


@dataclass
class ModelCard:
    schema: str
    created_at: str
    run: str
    labels: list[str]
    input: InputSpec
    output: OutputSpec
    resize: ResizeRule
    network: NetworkFacts
    classifier: ClassifierFacts
    models: list[ModelFile]
    latency: LatencyMeasure
    golden: list[GoldenVector]

    def model(self, file_format: str, precision: str = "float32") -> ModelFile | None:
        """Return the model file of ``file_format`` (``onnx``, ``tflite``) and
        ``precision``, or None."""
        for model in self.models:
            if model.format == file_format and model.precision == precision:
                return model
        return None


def write_card(uri: str, card: ModelCard) -> None:
    """Write ``card`` as JSON at ``uri`` (local or ``s3://``)."""
    storage.write_json(uri, to_plain(card))


def read_card(uri: str) -> ModelCard:
    """Read the model card at ``uri``; raise ValueError when it is not one."""
    document = storage.read_json(uri)
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"{uri!r} is not a fruits-pipeline model card ({SCHEMA!r})")
    return from_plain(ModelCard, document, "model card")
