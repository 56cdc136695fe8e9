"""The spec's building blocks: its error, the coercions every field shares (fractions like 8/255, finite floats,
strict whole numbers, seeds, safe names) and the base model that forbids unknown keys."""
from __future__ import annotations

import copy
import math
import re
from typing import Annotated, Any

from pydantic import (AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Strict)

from raydw.bounded import short

_FRACTION = re.compile(r"^\s*([0-9.]+)\s*/\s*([0-9.]+)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "1-100 characters: letters, digits, '.', '_' and '-', not starting with '.', '_' or '-'"
MAX_CELLS = 100_000  # default of SweepSpec.max_cells: the paper's grid is 468 cells


class SpecError(ValueError):
    """A sweep spec that cannot be run. The message names the file, the YAML path and what would be right."""


def _number(v: Any) -> Any:
    """Accept '8/255' in YAML where a float is expected: that is how the paper writes eps. A boolean is not a
    number (pydantic would read `true` as 1.0)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    if isinstance(v, str):
        m = _FRACTION.match(v)
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise ValueError(f"{v.strip()!r} divides by zero")
            return num / den
        try:
            f = float(v)  # "nan", "inf", "1e-3" (YAML 1.1 reads 1e-3 as a string)
        except ValueError:
            return v  # pydantic says it is not a number
        v = f
    if isinstance(v, float) and not math.isfinite(v):  # `.inf` and `.nan` pass gt=0 / fail it with a puzzling message
        raise ValueError(f"must be a finite number, got {v}")
    return v


def _int64(v: int) -> int:
    if not -(2 ** 63) <= v < 2 ** 63:
        raise ValueError(f"{short(v, 40)} does not fit a 64-bit integer (the store's columns)")
    return v


def _seed(v: int) -> int:
    if not 0 <= v < 2 ** 32:  # numpy's RandomState and Optuna's sampler take seeds in [0, 2**32)
        raise ValueError(f"a seed is a whole number in [0, 2**32), got {short(v, 40)}")
    return v


def check_storage(v: str) -> str:
    """An empty storage would be the working directory itself; a NUL cannot be in any path."""
    if not v.strip() or "\0" in v:
        raise ValueError(f"storage {short(v, 60)} is not a folder or URI (e.g. ./results, ~/raydw-results, s3://bucket/x)")
    return v


def _name(v: str) -> str:
    """Names become folder and file names (Ray Tune's experiment folder is the sweep name) and table labels:
    one safe path component, so `../../x` cannot write outside the store."""
    if not _NAME.match(v):
        raise ValueError(f"{short(v, 60)} is not a valid name: {NAME_RULE}")
    return v


# Every float of the spec is finite (`.inf` / `.nan` pass `gt=0`), and '8/255' is read as a fraction.
Num = Annotated[float, BeforeValidator(_number), AllowInfNan(False)]
# Whole numbers are whole numbers: strict, so `epochs: true` or `steps: 2.5` is refused, not read as 1 or 2;
# bounded to the int64 the store's columns hold.
Int = Annotated[int, Strict(), AfterValidator(lambda v: _int64(v))]  # not Field(ge=..): it would replace a field's own ge
Seed = Annotated[int, Strict(), AfterValidator(lambda v: _seed(v))]
Bool = Annotated[bool, Strict()]  # `true` / `false` only; pydantic would accept 1, "yes" and "off"
Name = Annotated[str, Strict(), AfterValidator(_name)]


class SpecModel(BaseModel):
    # Unknown keys are errors: a misspelt field silently falling back to a default costs GPU-hours.
    model_config = ConfigDict(extra="forbid", frozen=True)

def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out

