#!/usr/bin/env python3
"""Run fruits-pipeline on Amazon EMR, EU-only and private by default.

    .venv/bin/python scripts/submit_step.py --bucket my-fruits-eu \\
        --input s3://my-fruits-eu/data/Test/ --create --wait --share \\
        -- --weights s3://my-fruits-eu/models/mobilenet_v2.h5

The same command is installed as ``.venv/bin/fruits-pipeline-emr``.

1. builds the code (a zip of src/fruits_pipeline for --py-files, without the submitter and
   the benchmark; requirements.txt generated from pyproject.toml) and uploads it to
   s3://BUCKET/PREFIX/runs/RUN_ID/code/ (the bucket's default encryption, or --kms-key-id);
2. --create uploads the wheelhouse of emr/lock/ once per lock (the nodes install only from
   it: the cluster needs no internet) and starts a transient cluster from
   emr/cluster-config.json that ends with its step, or --cluster-id adds the step to a
   running cluster;
3. the step runs ``spark-submit --deploy-mode cluster`` on scripts/spark_job.py with
   ``run --input … --output s3://BUCKET/PREFIX/runs/RUN_ID/output/`` and the job options;
4. --wait follows the step, --share prints presigned links, --dry-run prints every request
   as JSON and sends none.

Guards: the region and the buckets must be in the EU (--allow-non-eu to override); the
bucket must block public access and encrypt by default (--force to only warn).  Nothing here
ever writes a bucket policy or an ACL.

The code is the package fruits_pipeline.emr (installed in .venv by ``make setup``).
"""

import sys

from fruits_pipeline.emr.cli import main

if __name__ == "__main__":
    sys.exit(main())
