"""Each network the tests run is built once per test session and kept on disk.

Seeded ``random:SEED`` weights and local weights files are kept by what they are (the seed;
the file's path and sha256), int8 networks by their float32 graph, calibration batch and
settings.  Building one costs seconds (TensorFlow's import, Keras' build, ONNX Runtime's
calibration) and each is a pure function of its key, so a run handed a kept one computes
what it would have computed.  Tests of the building itself are marked
``networks_built_here`` and bypass the cache (conftest.py).

A run started as its own process gets the same cache through ``process_env``: a
``sitecustomize`` on its ``PYTHONPATH`` installs it in the driver (not in Spark's Python
workers, which build no network).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The environment variable naming the cache folder in a run's own process.
ENV = "FRUITS_TEST_NETWORKS"

#: ``sitecustomize`` text that installs the cache in a run's driver process.
HOOK = f"""
import os, sys
if os.environ.get({ENV!r}) and "pyspark.daemon" not in sys.orig_argv:
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    import networks
    networks.install(os.environ[{ENV!r}])
"""


def _kept(path: Path, build: Callable[[], Any]) -> Any:
    """``build()``'s value, pickled at ``path`` the first time (written whole, then renamed,
    so that concurrent runs never read half of it)."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = build()
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(partial, path)
    return value


def kept_weights(folder: Path, load_weights: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``load_weights`` (the product's) through the cache in ``folder``."""
    from fruits_pipeline.chain import weights

    def kept(spec):
        if spec.kind == "random":
            key = f"random-{spec.seed}"
        elif spec.kind == "file" and os.path.isfile(spec.location or ""):
            named = f"{spec.location}\n{weights.sha256_file(spec.location)}"
            key = "file-" + hashlib.sha256(named.encode()).hexdigest()
        else:  # ImageNet's download and S3 objects: their own loading is what is tested
            return load_weights(spec)
        return _kept(folder / f"weights-{key}.pickle", lambda: load_weights(spec))

    return kept


def install(folder: str | os.PathLike, patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Route the product's network building through the cache in ``folder``; ``patch`` sets
    an attribute (``monkeypatch.setattr`` in a test, so that it is undone after)."""
    from fruits_pipeline.chain import job, weights
    from fruits_pipeline.engines import onnxruntime_int8_engine as int8

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quantize = int8.quantize
    kept = kept_weights(folder, weights.load_weights)

    def kept_quantization(model, batch):
        digest = hashlib.sha256(model.SerializeToString())
        digest.update(str(batch.shape).encode() + batch.tobytes())
        digest.update(json.dumps(int8.SETTINGS, sort_keys=True).encode())
        return _kept(folder / f"int8-{digest.hexdigest()}.pickle", lambda: quantize(model, batch))

    # the job binds load_weights by name; the commands import it from its module when called
    for module in (weights, job):
        patch(module, "load_weights", kept)
    patch(int8, "quantize", kept_quantization)


def build(folder: str | os.PathLike, weights_option: str) -> None:
    """Build the network of ``weights_option`` (a ``--weights`` value) into the cache in
    ``folder`` now, so that runs started together find it there instead of each building it."""
    from fruits_pipeline.chain import weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kept_weights(folder, weights.load_weights)(weights.parse_weights_spec(weights_option))


def process_env(folder: str | os.PathLike, more_hooks: str = "") -> dict[str, str]:
    """The environment of a run started as its own process, with the cache in ``folder``:
    a ``sitecustomize`` (the cache's ``HOOK`` then ``more_hooks``) in a new folder beside
    the cache, put first on ``PYTHONPATH`` (which Spark passes on to its workers)."""
    hooks = Path(tempfile.mkdtemp(prefix="hooks-", dir=Path(folder).parent))
    (hooks / "sitecustomize.py").write_text(HOOK + more_hooks)
    environment = dict(os.environ, **{ENV: str(folder)})
    paths = [str(hooks), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return environment
