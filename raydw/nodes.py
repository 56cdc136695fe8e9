"""`python -m raydw.nodes ADDRESS N` (slurm/raydw.sbatch calls it by this name): raydw.run.nodes, where Ray glue lives."""
from raydw.run.nodes import alive_nodes, main, wait_for_nodes  # noqa: F401

if __name__ == "__main__":
    import sys

    sys.exit(main())
