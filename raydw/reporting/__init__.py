"""What a user reads of a sweep: `raydw status`, the end-of-sweep summary, the HTML report and its live view."""
