"""Entrypoint of every raylight Ray job: ``python jobs/run.py <command> <overrides>``.

Runs the same ``raylight`` command a user would run, connected to the cluster the job runs on
(the Jobs API sets ``RAY_ADDRESS`` for the job's driver). ``raylight submit`` builds this line.
"""

import os
import sys

from raylight.cli import main

if __name__ == "__main__":
    # Ray may replace this working directory under us (see raylight.tracking._ensure_cwd).
    os.environ["RAYLIGHT_JOB_CWD"] = os.getcwd()
    # Last overrides win in Hydra: whatever the command line said, run on this cluster.
    sys.argv = ["raylight", *sys.argv[1:], "cluster=address", "cluster.address=auto"]
    main()
