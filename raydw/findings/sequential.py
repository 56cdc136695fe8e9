"""Adaptive seeds: look at each comparison after every added seed, stop it once decided, keep each verdict's error
at the spec's level across the looks (docs/findings.md, "Adaptive seeds").

The design is a Bonferroni split of the error over the planned looks (rounds) of the sweep: a comparison looked at
in rounds 1..R is decided at each look by the equivalence rule's two one-sided tests at (1 - level) / (2 R) each,
so its chance of a false match (or a false no-match) over all looks is at most (1 - level) / 2, whatever the
looks' correlation (the union bound; Bonferroni 1936, as a group-sequential design in Jennison & Turnbull 2000,
sec. 1.3 / 9.1, which also give the sharper but correlation-dependent Pocock and O'Brien-Fleming boundaries that
do not apply here: the seed part's df and the family variance change between looks, so the information fractions
those boundaries need are not known in advance).

Rounds. Round r takes ticket seeds 1..start+r-1 and dense seeds 1..max(replicate, start+r-1) (seeds in the
design's order); a comparison still inconclusive after round r asks for its ticket's next seed, and the dense
cell's where it would be the side with fewer seeds. A metric's state is frozen at the first round that decides it
(a later round's data never reopens it), and a level stops as soon as its verdict is decided. Everything is a
function of the stored rows: rerunning is resuming, the seeds already run are looks already taken, and a round
is evaluated only once every cell it asks for is stored (a killed round is finished first, never rerun).

Pure pandas / numpy / scipy: no Ray, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from raydw.findings import analysis
from raydw.findings.uncertainty import t_quantile

DECISIONS = ("match", "no match", "inconclusive")


@dataclass(frozen=True)
class Design:
    """start: seeds every ticket cell runs before the first look; replicate: seeds every dense cell runs before it
    (they teach each family its seed variance); max: the most seeds a comparison gets; values: the seed values in
    the order they are used (default 1..max, so seed k's cells have the ids a fixed `seeds: [1..k]` gives)."""
    start: int = 1
    replicate: int = 3
    max: int = 5
    values: tuple[int, ...] | None = None

    def __post_init__(self):
        if not 1 <= self.start <= self.max:
            raise ValueError(f"start {self.start} must be in [1, max {self.max}]")
        if not 1 <= self.replicate <= self.max:
            raise ValueError(f"replicate {self.replicate} must be in [1, max {self.max}]")
        if self.values is not None and len(self.values) != self.max:
            raise ValueError(f"values lists {len(self.values)} seeds, max is {self.max}: one seed value per possible seed")

    @classmethod
    def of(cls, adaptive) -> "Design":
        """The design of a spec's `seeds: {adaptive: ...}` section (raydw.spec.AdaptiveSeedsSpec). Here, not on the
        spec: the spec is imported by everything and must not import the analysis this module needs."""
        return cls(adaptive.start, adaptive.replicate, adaptive.max, tuple(adaptive.seeds()))

    @property
    def seeds(self) -> list[int]:
        return list(self.values) if self.values is not None else list(range(1, self.max + 1))

    @property
    def rounds(self) -> int:
        """Planned looks per comparison: one per ticket seed count start..max."""
        return self.max - self.start + 1

    def bounds(self, r: int) -> tuple[int, int]:
        """(ticket seeds, dense seeds) a comparison has at round r (1-based)."""
        k = self.start + r - 1
        return k, max(self.replicate, k)


def adjusted_level(level: float, looks: int) -> float:
    """The two-sided level of one look's interval: the spec's error 1 - level split evenly over the looks."""
    return 1 - (1 - level) / looks


def decide(look: int, max_looks: int, delta: float, se: float, df: float, margin: float, alpha: float) -> str:
    """The equivalence rule's state at one look: 'match' when Delta's lower bound is above -margin, 'no match' when
    its upper bound is below, else 'inconclusive'. The bounds are Delta -+ t(1 - alpha / (2 max_looks), df) x se:
    each one-sided test at alpha / 2 split over the planned looks (Bonferroni). Delta, se in accuracy units (0-1),
    margin in points, alpha = 1 - the spec's level."""
    if not 1 <= look <= max_looks:
        raise ValueError(f"look {look} is outside the planned looks 1..{max_looks}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha} must be in (0, 1)")
    half = t_quantile(1 - alpha / (2 * max_looks), df) * se if se > 0 else 0.0
    m = margin / 100
    return "match" if delta - half > -m else "no match" if delta + half < -m else "inconclusive"


# -- the rounds of a store --------------------------------------------------------------------------------
_KEEP = ("delta", "lo", "hi", "se", "df", "seed_sd", "seed_df", "seed_source")  # per metric, frozen with its state


def _rank(df: pd.DataFrame, design: Design) -> pd.Series:
    """Each row's seed position in the design (1-based); rows of other seeds get a rank past max (left out)."""
    pos = {s: i + 1 for i, s in enumerate(design.seeds)}
    return df["seed"].map(lambda s: pos.get(int(s), design.max + 1) if pd.notna(s) else design.max + 1)


def cells_of(row: dict, metric: str, regimes: dict) -> tuple[tuple, tuple]:
    """(ticket setting, dense setting) behind one metric of one verdict row: (pretraining, dataset, regime, data
    fraction, ticket method, level)."""
    regime = regimes["standard"] if metric == "sa_std" else regimes["adversarial"]
    frac = row["std_fraction"] if metric == "sa_std" else row["data_fraction"]
    base = (row["pretraining"], row["dataset"], regime, float(frac))
    return (*base, row["ticket_method"], row["target_sparsity"]), (*base, "dense", 0.0)


def _seeds_stored(df: pd.DataFrame, rank: pd.Series) -> dict[tuple, set[int]]:
    """setting -> the seed ranks it has a row for (any status: a failed cell is a look that is missing, not one
    still to run; a rerun retries it)."""
    keys = [df[c] for c in analysis.SETTING]
    out: dict = {}
    for key, rk in zip(zip(*keys), rank):
        out.setdefault(tuple(key[:3]) + (float(key[3]),) + tuple(key[4:]), set()).add(int(rk))
    return out


@dataclass
class Replay:
    """verdicts: one row per ticket level as analysis.verdicts, each metric's state and interval frozen at the
    round that decided it, `look` the round each level's row stands at and `stopped` why it stopped there; round:
    the last round whose cells are all stored (0: round 1 is incomplete); next_cells: the settings and seed values
    the next round needs that are not stored yet (empty: nothing left to run)."""
    verdicts: pd.DataFrame
    round: int
    next_cells: pd.DataFrame


_LEVEL = ["pretraining", "dataset", "data_fraction", "ticket_method", "target_sparsity"]


def replay(trials, design: Design, cells=None, reading: str = "full", margin: float = analysis.DEFAULT_MARGIN,
           level: float = 0.95, **verdict_args) -> Replay:
    """Evaluate the stored rows round by round (see the module's doc): which comparisons are decided, which stopped
    at the maximum, and which cells the next round needs. trials: a store URI or DataFrame, as analysis.verdicts;
    the rule is equivalence (the only one with an 'inconclusive' to spend seeds on); each look's interval is at
    adjusted_level(level, design.rounds)."""
    df = analysis.trials_frame(trials, cells)
    rank = _rank(df, design)
    df, rank = df[rank <= design.max], rank[rank <= design.max]
    stored = _seeds_stored(df, rank)
    R, alpha = design.rounds, 1 - level
    frozen: dict = {}      # (level key, metric) -> (state, round, {column: value})
    decided: dict = {}     # level key -> the round its verdict was decided
    at_decision: dict = {}  # level key -> its verdict row at that round
    rows: dict = {}        # level key -> its verdict row at the last round evaluated
    open_now: dict | None = None  # level key -> its metrics still open (None before round 1)
    regimes: dict = {}
    done = 0
    for r in range(1, R + 1):
        kt, kd = design.bounds(r)
        dense = df["ticket_method"] == "dense"
        sub = df[(dense & (rank <= kd)) | (~dense & (rank <= kt))]
        v = analysis.verdicts(sub, rule="equivalence", reading=reading, margin=margin,
                              level=adjusted_level(level, R), **verdict_args)
        regimes = v.attrs["regimes"]
        cur = {tuple(row[c] for c in _LEVEL): row for row in v.to_dict("records")}
        asked = {k: list(analysis.METRICS) for k in cur} if open_now is None else open_now
        if _needs(cur, asked, design, r, stored, regimes):
            break  # round r is not complete: finish it before looking
        done, rows, open_now, attrs = r, cur, {}, v.attrs
        for key, row in cur.items():
            for m in analysis.METRICS:
                if (key, m) not in frozen:
                    st = _look_state(row, m, r, R, margin, alpha)
                    if st != "inconclusive":
                        frozen[(key, m)] = (st, r, {c: row[f"{c}_{m}"] for c in _KEEP})
            states = [frozen.get((key, m), ("inconclusive",))[0] for m in analysis.READINGS[reading]]
            if analysis.combine_states(states) == "inconclusive":
                open_now[key] = [m for m in analysis.READINGS[reading] if (key, m) not in frozen]
            else:
                decided.setdefault(key, r)
                at_decision.setdefault(key, row)  # its seeds and means as decided, not as later rows (a fixed run) stand
        if not open_now:
            break
    if not rows:  # round 1 is incomplete (or there is no ticket): nothing looked at yet
        need = _needs(cur, {k: list(analysis.METRICS) for k in cur}, design, 1, stored, regimes)
        return Replay(v.assign(look=0, stopped="waiting for round 1"), 0, _next_frame(need))
    out = _frozen_frame({**rows, **at_decision}, frozen, decided, open_now, done, design, reading)
    out.attrs.update({**attrs, "design": design, "looks": R})
    need = _needs(rows, open_now, design, done + 1, stored, regimes) if done < R else []
    return Replay(out, done, _next_frame(need))


def _look_state(row: dict, m: str, r: int, R: int, margin: float, alpha: float) -> str:
    """One metric's state at round r: decide() on Delta's se and df; 'missing' and the stopped ticket's 'no match'
    as analysis.verdicts says them. A look whose interval lacks the seed part of a side (one seed and no family to
    stand in) decides nothing: the Bonferroni split bounds the error only of intervals that cover seed variation."""
    st = row[f"state_{m}"]
    if st == "missing" or pd.isna(row[f"se_{m}"]):
        return st
    if not analysis.covers_seeds(row[f"seed_source_{m}"]):
        return "inconclusive"
    return decide(r, R, row[f"delta_{m}"], row[f"se_{m}"], row[f"df_{m}"], margin, alpha)


def _needs(rows: dict, asked: dict, design: Design, r: int, stored: dict, regimes: dict) -> list[tuple]:
    """Every (setting, seed rank) that round r needs for the asked metrics of the asked levels, not stored yet."""
    kt, kd = design.bounds(r)
    need: list = []
    for key, metrics in asked.items():
        for m in metrics:
            if regimes.get("standard" if m == "sa_std" else "adversarial") is None:
                continue
            ticket, dense = cells_of(rows[key], m, regimes)
            for setting, k in ((ticket, kt), (dense, kd)):
                need += [(setting, j) for j in range(1, k + 1)
                         if j not in stored.get(setting, set()) and (setting, j) not in need]
    return need


def _frozen_frame(rows: dict, frozen: dict, decided: dict, open_now: dict, done: int, design: Design,
                  reading: str) -> pd.DataFrame:
    """The verdicts as they stand: each metric from the round that froze it (else the last round), the verdicts
    recombined, and why each level stopped."""
    out = []
    for key, row in rows.items():
        row = dict(row)
        for m in analysis.METRICS:
            st, _, vals = frozen.get((key, m), ("inconclusive", done, {}))
            row.update({f"{c}_{m}": x for c, x in vals.items()})
            row[f"state_{m}"] = st
            row[f"matching_{m}"] = {"match": True, "no match": False}.get(st, pd.NA)
        for name, metrics in analysis.READINGS.items():
            row[f"verdict_{name}"] = analysis.VERDICT_STATES[analysis.combine_states([row[f"state_{m}"] for m in metrics])]
            row[f"double_win_{name}"] = {"double-win": True, "not double-win": False}.get(row[f"verdict_{name}"], pd.NA)
        row["verdict"], row["double_win"] = row[f"verdict_{reading}"], row[f"double_win_{reading}"]
        if key in open_now:
            row["look"] = done
            row["stopped"] = (f"at max ({design.max} seeds)" if done == design.rounds
                              else f"open: next ticket seed {design.seeds[design.bounds(done + 1)[0] - 1]}")
        else:
            row["look"] = decided.get(key, done)
            row["stopped"] = "missing (see reason)" if row["verdict"] == "missing" else f"decided at look {row['look']}"
        out.append(row)
    frame = pd.DataFrame(out)
    for c in ("double_win", "double_win_full", "double_win_loose", *[f"matching_{m}" for m in analysis.METRICS]):
        frame[c] = frame[c].astype("boolean")
    return frame


def _next_frame(need: list[tuple]) -> pd.DataFrame:
    cols = ["pretraining", "dataset", "regime", "data_fraction", "ticket_method", "target_sparsity", "seed_rank"]
    return pd.DataFrame([(*s, k) for s, k in need], columns=cols)


# -- the verdicts a sweep reports -------------------------------------------------------------------------
def verdicts_of(trials, settings: dict, design: Design | None = None, cells=None) -> pd.DataFrame:
    """The verdicts as the sweep decided them: with adaptive seeds under the equivalence rule, replay's (each state
    frozen at the look that decided it, `stopped` saying why, intervals at the split level); otherwise
    analysis.verdicts. `settings`: analysis.verdicts arguments (rule, margin, level, ...)."""
    if design is None or settings.get("rule") != "equivalence":
        return analysis.verdicts(trials, cells=cells, **settings)
    return replay(trials, design, cells=cells, **{k: v for k, v in settings.items() if k not in ("rule", "tol")}).verdicts


def spec_verdicts(trials, spec, cells=None) -> pd.DataFrame:
    """verdicts_of under a spec's `verdicts:` section and its seed design."""
    a = spec.adaptive_seeds()
    return verdicts_of(trials, analysis.verdict_settings(spec), Design.of(a) if a is not None else None, cells)
