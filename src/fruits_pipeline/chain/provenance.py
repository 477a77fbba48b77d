"""The provenance key: everything that decides an image's features, in one fingerprint.

Two rows of features are interchangeable only when the same network ran on the same pixels
in the same arithmetic: the engine's prepared network (``PreparedNetwork.sha256``: the ONNX
bytes, or the weight arrays), its precision and, for a quantized network, the calibration
that made its bytes, the weights it came from, and the versions of the code that decodes,
resizes and infers.  ``--resume`` (the staging of an interrupted run) and ``--incremental``
(the finished run at OUTPUT) reuse rows only under the run's own key; batch size, limits
and PCA settings do not change a row and are not in it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace

from fruits_pipeline import __version__
from fruits_pipeline.engines import Engine, PreparedNetwork
from fruits_pipeline.results.report import ProvenanceFacts


def provenance(engine: Engine, prepared: PreparedNetwork, arrays_sha256: str) -> ProvenanceFacts:
    """Return the provenance of features that ``engine`` computes with ``prepared``, made
    from weights whose arrays have ``arrays_sha256``."""
    import PIL

    facts = ProvenanceFacts(
        key="",
        engine=prepared.engine,
        network_sha256=prepared.sha256,
        precision=prepared.precision,
        weights_arrays_sha256=arrays_sha256,
        versions={"fruits_pipeline": __version__, "pillow": PIL.__version__, **engine.versions()},
        calibration=prepared.calibration,
    )
    return replace(facts, key=provenance_key(facts))


def provenance_key(facts: ProvenanceFacts) -> str:
    """Return the sha256 over every field of ``facts`` but ``key``."""
    fields = {name: value for name, value in asdict(facts).items() if name != "key"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()
