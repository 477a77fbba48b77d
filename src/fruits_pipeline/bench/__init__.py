"""``make bench``: the job's speed against a ceiling and a notebook-style chain.  Not part
of the job, and not shipped to a cluster."""
