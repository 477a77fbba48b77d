"""spark-submit entry point: ``spark-submit scripts/spark_job.py run --input … --output …``.

The same command line as ``fruits-pipeline``, but the Spark master and resources come from
spark-submit (on EMR: YARN).  Ship the package with ``--py-files`` or install it on the nodes.
"""

import sys

from fruits_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(default_master=None))
