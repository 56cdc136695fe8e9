"""The sweep spec: typed, validated, with units and help beside each field, loaded from YAML.

Torch-free on purpose: `raydw sweep --dry-run` and result queries must not pay for importing torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from raydw.bounded import short

# The spec's parts, importable from raydw.spec as before the split (types -> parts -> sweep).
from raydw.spec.types import (MAX_CELLS, NAME_RULE, Bool, Int, Name, Num, Seed, SpecError,  # noqa: F401
                              SpecModel, check_storage)
from raydw.spec.parts import (AttackSpec, OptimizerSpec, RegimeSpec, RecipeSpec, PretrainingSpec, ImpSpec,
                              TicketSpec, DataSpec, EvalSpec, EarlyStopSpec, SearchSpec)  # noqa: F401
from raydw.spec.tune import TUNE_FIELDS, DistSpec, TuneSpaceSpec, TuneSpec  # noqa: F401
from raydw.spec.sweep import (ResourceSpec, VerdictSpec,
                              AdaptiveSeedsSpec, SeedsSpec, SeedsField, MlflowTrackerSpec, WandbTrackerSpec,
                              TensorboardTrackerSpec, TrackerSpec, TRACKER_KINDS, SweepSpec)  # noqa: F401


def _format_errors(err: ValidationError, source: str, single_tickets: bool = False) -> str:
    lines = [f"{source}: invalid sweep spec ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = list(e["loc"])
        if single_tickets and loc[:2] == ["tickets", 0]:  # the YAML had one mapping, not a list: say its path
            loc = ["tickets", *loc[2:]]
        if loc[:1] == ["seeds"] and loc[1:2] in (["list"], ["mapping"]):  # the seeds union's tag, not a YAML key
            loc = [loc[0], *loc[2:]]
        path = ".".join(str(p)[:60] for p in loc) or "(top level)"  # a key is user text: bounded too
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (misspelt?)"
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a tagged union (trackers): say the valid tags
            ctx = e.get("ctx", {})
            got = f"got {short(ctx.get('tag'))}" if e["type"] == "union_tag_invalid" else "missing"
            key = str(ctx.get("discriminator", "kind")).strip("'")
            msg = f"'{key}' must be one of {ctx.get('expected_tags') or ', '.join(TRACKER_KINDS)}; {got}"
        if e["type"] == "literal_error":
            msg = f"{msg}; got {short(e.get('input'))}"
        lines.append(f"  at {path}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec is a YAML mapping, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_errors(e, source, isinstance(data.get("tickets"), dict))) from None
    # Names that need a registry are checked here too, so a typo fails before Ray starts.
    from raydw.spec import names

    problems = names.check_spec(spec)
    if problems:
        raise SpecError(f"{source}: invalid sweep spec ({len(problems)} problem{'s' if len(problems) > 1 else ''})\n" + "\n".join(f"  at {p}" for p in problems))
    # Per-dataset overrides must validate too.
    for rname, r in spec.regimes.items():
        for ds in spec.data.datasets:
            try:
                r.for_dataset(ds)
            except ValidationError as e:
                raise SpecError(_format_errors(e, f"{source} (regimes.{rname}.per_dataset.{ds})")) from None
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file with raydw.spec.safeyaml (bounded, no duplicate keys) and validate it; SpecError otherwise."""
    import yaml

    from raydw.spec import safeyaml

    p = Path(path)
    try:
        data = safeyaml.load(p, "sweep file")
    except safeyaml.InputError as e:
        raise SpecError(str(e)) from None
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    return parse_spec(data, str(p))


def _type_name(ann) -> str:
    """A field's type as the user writes it: Num is a float, Int an int (the Annotated validators are not shown)."""
    import types
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None and args and origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def describe(model: type[BaseModel] = SweepSpec, prefix: str = "") -> list[str]:
    """Every field of the spec with its type, default and help: `raydw spec-fields` prints it."""
    import typing

    out = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = f.annotation
        default = "required" if f.is_required() else f"default {f.get_default(call_default_factory=True)!r}"
        args = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a for a in getattr(ann, "__args__", ())]
        inner = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]  # seeds' branches are Annotated
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            inner = [ann]
        tname = _type_name(ann)
        shown = tname if not inner or "|" in tname else (f"list of {inner[0].__name__}" if tname.startswith("list") else inner[0].__name__)
        out.append(f"{path}: {shown} ({default})" + (f"\n    {f.description}" if f.description else ""))
        for sub in inner:
            out += describe(sub, f"{path}.")
    return out
