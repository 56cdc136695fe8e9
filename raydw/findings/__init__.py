"""A store's rows as statistics: loading them, intervals, verdicts, and the adaptive seed design."""
