"""The benchmark suite of file_storage: ``python -m benchmarks [--quick]`` (or ``make bench``).

Every workload runs the library and its baselines in the same run, against a moto S3
server in a separate process on 127.0.0.1 and a temp folder, and reports ratios so a
reader can judge the library on any machine. See ``docs/benchmarks.md``.

Modules: ``_common`` (scales, rows, meters, the moto process), ``s3_clients`` (the S3
contenders), ``s3_small`` (small objects, listing, botocore tuning), ``s3_large`` and
``_child`` (large transfers and peak RSS, in fresh subprocesses), ``local`` (local
disk), ``quota`` (quota cost and import time), ``report`` (Markdown and targets).
"""
