"""Ray glue: cluster connection, Tune trials, Train workers, the sweep driver. The only package that imports Ray."""
