"""Reading a store's rows into findings: per-example outcomes, intervals, verdicts, the seed design, the report."""
