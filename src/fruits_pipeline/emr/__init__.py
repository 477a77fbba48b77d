"""The EMR submitter: runs the job on Amazon EMR, EU-only and private by default.

It runs on the user's machine and never on the cluster, so it is left out of the job's
``--py-files`` zip.  One idea per module:

- ``errors``: how it fails (one line, exit 2) and the names it prints under;
- ``s3paths``: s3:// URIs and where a run lives in S3;
- ``guards``: the EU and privacy guards;
- ``options``: the command line, checked (the job's options by the job's own parser);
- ``bundle``: the kit's files and the code uploaded for the cluster;
- ``wheelhouse``: the lock, and the wheelhouse the nodes install from, uploaded once per lock;
- ``lock``: ``python -m fruits_pipeline.emr.lock``, the locks from pyproject.toml's pins;
- ``requests``: every request of a run, built without I/O, and the dry-run list;
- ``aws``: the boto3 session, the S3 calls and the presigned links;
- ``targets``: the seam where a cluster target plugs in (EMR on EC2 today);
- ``watch``: following a step until it ends;
- ``cli``: ``main`` and the run flow.
"""
