# Two commands for a newcomer: `make demo` and `make test`.  Both set up .venv first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := demo-data

# Python workers must run the venv's interpreter, not whatever `python3` is on PATH.
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test mutants bench bench-scale bench-classifier lint lock clean

setup: $(STAMP)

# Idempotent: only re-installs when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,jdk]'
	$(PY) -c "import pyspark, tensorflow, keras, pyarrow, pandas, numpy, PIL, boto3, s3fs; \
	print('setup ok: pyspark', pyspark.__version__, '| tensorflow', tensorflow.__version__, \
	'| keras', keras.__version__, '| numpy', numpy.__version__, '| pyarrow', pyarrow.__version__)"
	$(PY) -m fruits_pipeline.java_runtime --write-spark-env
	@touch $(STAMP)

demo: setup
	$(PY) -m fruits_pipeline.sample_images $(DEMO)/images
	$(VENV)/bin/fruits-pipeline run --input $(DEMO)/images --output $(DEMO)/output \
		--weights random:0 --overwrite

test: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/pytest

# Planted bugs the suite must catch, each in a scratch copy (tests/mutants.py); slow by
# nature, so not part of `make test`.
mutants: setup
	$(PY) tests/mutants.py

# Speed figures (printed, never asserted): the extract stage against a one-process ceiling.
bench: setup
	$(PY) -m fruits_pipeline.bench.benchmark $(BENCH_ARGS)

# What grows with the number of images (printed, never asserted): the job on the shared sample
# and on 10 hard-linked copies of it, each process's peak memory and the stages' seconds.
bench-scale: setup
	$(PY) -m fruits_pipeline.bench.scale $(BENCH_ARGS)

# The classifier's figures (printed, never asserted): test accuracy with the shared ImageNet
# weights, the exported models against Spark's classifier, their sizes and one-core latency.
bench-classifier: setup
	$(PY) -m fruits_pipeline.bench.classifier $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests scripts

# The EMR nodes' wheelhouse locks, from pyproject.toml's pins (needs PyPI; docs/emr.md).
lock: setup
	$(PY) -m fruits_pipeline.emr.lock

clean:
	rm -rf $(VENV) $(DEMO) build dist src/*.egg-info .pytest_cache
