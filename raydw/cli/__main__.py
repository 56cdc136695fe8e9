"""`python -m raydw.cli ...`: the same as the `raydw` command."""
from raydw.cli import entry

entry()
