"""Training: the one readable loop, evaluation, pre-training recipes. Ray-free."""
