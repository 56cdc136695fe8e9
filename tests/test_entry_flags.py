"""`python -m raydw.nodes` takes its arguments with the argument types of the `raydw` command (raydw.argtypes):
a bad address, node count or timeout is one argparse line, exit 2, before Ray is imported (adversarial pass 2:
'notanaddress' ended in Ray's ValueError traceback, n = -3, --timeout -1 and nan were accepted, and each wait
started Ray against the address for half a minute first)."""
from __future__ import annotations

import sys

import pytest

from raydw.run.nodes import main


@pytest.mark.parametrize("argv,says", [
    (["notanaddress", "3"], "argument address: 'notanaddress' is not HOST:PORT"),
    (["10.0.0.1:99999", "3"], "is not HOST:PORT with a port in 1-65535"),
    (["10.0.0.1:6379", "-3"], "argument n: -3 is not >= 1"),
    (["10.0.0.1:6379", "3", "--timeout", "-1"], "argument --timeout: -1 is not a number of seconds > 0"),
    (["10.0.0.1:6379", "3", "--timeout", "nan"], "argument --timeout: nan is not a number of seconds > 0"),
])
def test_a_bad_argument_of_python_m_raydw_nodes_is_one_line_exit_2_without_ray(argv, says, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert "ray" not in sys.modules
