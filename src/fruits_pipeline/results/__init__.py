"""What a run writes: the output layout, the files, the report, its plots and page."""
