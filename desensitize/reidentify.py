"""Row-level reconstruction for the leak scanner: what the columns of one row give back together.

Two attacks are tried on every table the scanner reads (a share table, a CSV, a Markdown table,
a workbook sheet), vectorised over all rows:

1. **An ID number from its masked form and the columns beside it.** Visible characters of a masked
   ID (``110105********7285``, ``1***************2X``) are combined with a birth date in the same
   row (``1935-03-15``, ``19350315``, ``1935-**-**``, ``1935``: the digits it shows) and a 性别
   (``1``/``2``, ``男``/``女``, ``M``/``F``: the parity of digit 17), and the hidden digits are
   enumerated under the GB 11643 check character: every assignment of the hidden positions is
   scored once (at most :data:`MAX_COMBOS` of them, i.e. five hidden digits), and each row looks up
   how many assignments meet its check character — no loop over rows. A row is **rebuilt** when
   exactly one ID number fits it *and* that number is a real one of the base libraries (the
   threshold of docs/masking.md: a unique candidate that is somebody's number). More than five
   hidden digits always leave at least 10⁶ / 11 candidates, so such rows are not enumerated.
   A full-width ``＊`` (how an extract's fingerprint writes some mask characters) is a mask
   character like ``*`` wherever a value is parsed, so a fingerprinted file is read as masked too.
   Columns are recognised by their values, not their names: any column may be tried as the birth
   date or the sex of any masked-ID column, and the base-library check keeps chance from counting.
2. **A person from name + birth date + region.** A full name (as published, unmasked, in a column
   not graded 公开), a full birth date and a region (the 6 leading digits of a masked ID, a 6-digit
   region code, or the 区/县 of an address) that match exactly one person of the base library
   identify that person — and so their ID number.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import polars as pl

from desensitize import rules
from desensitize.linkage import BIRTH_DIGITS, CHECK_CHARS, CHECK_DIGIT, SEX_DIGIT, WEIGHTS
from desensitize.lookup import (
    Lookup,
    ValueSet,
    distinct_if_few,
    frame_pairs,
    hash_pair,
    member,
    pair_frame,
    runs,
)

MAX_COMBOS = 100_000
"""Most assignments of hidden digits enumerated for one row pattern (10⁵: five hidden digits)."""

_W = np.array(WEIGHTS, dtype=np.int64)
_CHECK_VALUE = np.array([10 if c == "X" else int(c) for c in CHECK_CHARS])  # residue → check digit (X = 10)
_RESIDUE_OF_CHECK = np.argsort(_CHECK_VALUE)  # check digit (X = 10) → residue
_FRAGMENT = r"^[0-9X*]{18}$"
_COMPACT_DATE = r"^(\d{4})(\d{2})(\d{2})(?:[ T].*)?$"
_DATE = r"^(\d{4})(?:[-/.年](\d{1,2}|\*{1,2})(?:[-/.月](\d{1,2}|\*{1,2})日?)?)?(?:[ T].*)?$"
_MALE, _FEMALE, _UNKNOWN = {"1", "男", "M", "MALE"}, {"2", "女", "F", "FEMALE"}, {"0", "9", "未知", "未说明"}


def _text(s: pl.Series) -> pl.Series:
    """Values as text, a fingerprint's ``＊`` read as the ``*`` it stands for (``110105＊*＊…``)."""
    return s.cast(pl.String).str.replace_all(rules.FULLWIDTH_MASK, rules.MASK, literal=True).str.strip_chars()


def _distinct_or_all(s: pl.Series) -> pl.Series:
    few = distinct_if_few(s)
    return s if few is None else few


def _masked_id(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(the values upper-cased as text, whether each is a masked ID number)."""
    t = _text(s).str.to_uppercase()
    return t, t.str.contains(_FRAGMENT) & t.str.contains(rules.MASK, literal=True)


def _only(values: pl.Series, keep: pl.Series) -> pl.Series:
    """``values`` where ``keep``, null elsewhere."""
    return values.to_frame("t").select(pl.when(keep).then(pl.col("t"))).to_series()


class MaskedIds:
    """A column that holds masked ID numbers: its fragments (the masked numbers upper-cased) made when a rule needs
    them — told, and their fewest hidden digits counted, on the column's distinct values where it has few."""

    def __init__(self, column: pl.Series, distinct: tuple[pl.Series, pl.Series] | None,
                 fragments: pl.Series | None = None) -> None:
        self.column, self._distinct, self._fragments = column, distinct, fragments

    @property
    def fragments(self) -> pl.Series:
        """The masked ID numbers, upper-cased, row by row (null elsewhere)."""
        if self._fragments is None:
            self._fragments = _only(*_masked_id(self.column))
        return self._fragments

    @property
    def fewest_hidden(self) -> int:
        """The fewest ``*`` among the 17 characters before the check character of any of them."""
        values = (self.fragments if self._distinct is None else self._distinct[0].filter(self._distinct[1]))
        return int(values.str.slice(0, CHECK_DIGIT).str.count_matches(r"\*").min() or 0)


def masked_ids(s: pl.Series) -> MaskedIds | None:
    """The column as :class:`MaskedIds`, or None when it holds no masked ID number (18 characters of
    digits, X and ``*``, at least one ``*``) — most columns of a large table, told by a length and two
    literal searches on their distinct values where they have few."""
    few = distinct_if_few(s)
    # what every masked ID number has before it is cleaned: a mask character and 18 characters (bytes) or
    # more — a column of names, tokens or masked mobiles is told by a length and two literal searches
    raw = (s if few is None else few).cast(pl.String)
    long = raw.filter(raw.str.len_bytes() >= CHECK_DIGIT + 1)
    if not (long.str.contains(rules.MASK, literal=True) | long.str.contains(rules.FULLWIDTH_MASK, literal=True)).any():
        return None
    if few is not None:
        distinct = _masked_id(few)
        return MaskedIds(s, distinct) if distinct[1].any() else None
    t, masked = _masked_id(s)
    if not masked.any():
        return None
    return MaskedIds(s, None, _only(t, masked))


def birth_digits(s: pl.Series) -> pl.Series:
    """The 8 birth-date digits a value shows, ``*`` where it does not (``1935-**-**`` → ``1935****``);
    null when the value is no date."""
    t = _text(s).to_frame("t")
    parts = t.select(
        pl.coalesce(pl.col("t").str.extract(_COMPACT_DATE, i), pl.col("t").str.extract(_DATE, i)).alias(n)
        for i, n in ((1, "y"), (2, "m"), (3, "d"))
    )

    def two(col: str, high: int) -> tuple[pl.Expr, pl.Expr]:
        digits = pl.col(col).str.contains(r"^\d+$").fill_null(False)
        value = pl.col(col).cast(pl.Int32, strict=False)
        ok = ~digits | ((value >= 1) & (value <= high))
        return pl.when(digits).then(pl.col(col).str.zfill(2)).otherwise(pl.lit("**")), ok.fill_null(True)

    month, month_ok = two("m", 12)
    day, day_ok = two("d", 31)
    year = pl.col("y").cast(pl.Int32, strict=False)
    valid = pl.col("y").is_not_null() & (year >= 1850) & (year <= 2100) & month_ok & day_ok
    return parts.select(pl.when(valid).then(pl.concat_str([pl.col("y"), month, day])).alias("b")).to_series()


def date_column(s: pl.Series, *, full: bool = False) -> pl.Series | None:
    """:func:`birth_digits` of a column most of whose values are dates (``full``: to the day); else None."""
    present = s.drop_nulls().len()
    if present == 0:
        return None
    b = birth_digits(s)
    if full:
        b = b.to_frame("b").select(pl.when(~pl.col("b").str.contains(r"\*")).then(pl.col("b"))).to_series()
    return b if b.drop_nulls().len() * 2 >= present else None


def sex_parity(s: pl.Series) -> pl.Series | None:
    """1 (odd: male) / 0 (even: female) / null per value of a column that holds only sex codes; else None."""
    t = _text(s).str.to_uppercase()
    if t.drop_nulls().n_unique() > len(_MALE | _FEMALE | _UNKNOWN):
        return None
    values = set(t.drop_nulls().unique().to_list())
    if not values or not values <= _MALE | _FEMALE | _UNKNOWN or not values & (_MALE | _FEMALE):
        return None
    mapping = {**{v: 1 for v in _MALE}, **{v: 0 for v in _FEMALE}}
    return t.replace_strict(mapping, default=None, return_dtype=pl.Int8)


def _matrix(s: pl.Series, width: int) -> np.ndarray:
    """Fixed-width ASCII values (no nulls) as an (n, width) byte matrix."""
    if s.len() == 0:
        return np.zeros((0, width), dtype=np.uint8)
    return np.frombuffer(s.str.join("").item().encode("ascii"), dtype=np.uint8).reshape(-1, width)


def _digits(m: np.ndarray) -> np.ndarray:
    """Digits of a byte matrix: 0–9, 10 for X, -1 for ``*``."""
    d = m.astype(np.int64) - 48
    d[m == ord("X")] = 10
    d[m == ord("*")] = -1
    return d


def rebuild_ids(fragments: pl.Series, birth: pl.Series | None = None, sex: pl.Series | None = None, *,
                max_combos: int = MAX_COMBOS) -> pl.Series:
    """For every row, the one ID number consistent with its masked ID (``fragments``), the birth-date
    digits beside it (``birth``, as :func:`birth_digits`) and the parity of its sequence digit
    (``sex``, as :func:`sex_parity`) under the check character; null where none or several are."""
    n = fragments.len()
    frag = _text(fragments).str.to_uppercase().to_frame("f").select(
        pl.when(pl.col("f").str.contains(_FRAGMENT)).then(pl.col("f")).otherwise(pl.lit("*" * 18))).to_series()
    d = _digits(_matrix(frag, 18))
    valid = (d[:, :CHECK_DIGIT] != 10).all(axis=1) & (d != -1).any(axis=1)
    if birth is not None:
        b = _digits(_matrix(birth.cast(pl.String).fill_null("*" * 8), 8))
        body = d[:, 6:14]
        valid &= ~((body >= 0) & (b >= 0) & (body != b)).any(axis=1)  # this is not the row's birth date
        d[:, 6:14] = np.where(body >= 0, body, b)
    parity = np.full(n, -1, dtype=np.int64) if sex is None else sex.cast(pl.Int64).fill_null(-1).to_numpy()
    valid &= ~((d[:, SEX_DIGIT] >= 0) & (parity >= 0) & (d[:, SEX_DIGIT] % 2 != parity))
    hidden = d[:, :CHECK_DIGIT] < 0
    check_hidden = d[:, CHECK_DIGIT] < 0
    valid &= 10.0 ** hidden.sum(axis=1) <= max_combos
    pattern = (hidden.astype(np.int64) << np.arange(CHECK_DIGIT)).sum(axis=1) | (check_hidden.astype(np.int64) << 17)
    known = (np.where(hidden, 0, d[:, :CHECK_DIGIT]) * _W).sum(axis=1) % 11

    found_rows: list[np.ndarray] = []
    found_ids: list[np.ndarray] = []
    for pat in np.unique(pattern[valid]):
        rows = np.flatnonzero(valid & (pattern == pat))
        positions = [p for p in range(CHECK_DIGIT) if pat >> p & 1]
        k = len(positions)
        assign = (np.arange(10 ** k)[:, None] // 10 ** np.arange(k - 1, -1, -1)) % 10
        contrib = (assign * _W[positions]).sum(axis=1) % 11
        sex_at = positions.index(SEX_DIGIT) if SEX_DIGIT in positions else None
        for p in (np.unique(parity[rows]) if sex_at is not None else [-1]):
            sub = rows if sex_at is None else rows[parity[rows] == p]
            allowed = np.arange(len(assign)) if p < 0 else np.flatnonzero(assign[:, sex_at] % 2 == p)
            if pat >> 17 & 1:  # check character hidden too: every assignment makes one valid number
                if len(allowed) != 1:
                    continue
                pick = np.full(len(sub), allowed[0])
            else:  # the hidden digits must bring the weighted sum to the check character's residue
                need = (_RESIDUE_OF_CHECK[d[sub, CHECK_DIGIT]] - known[sub]) % 11
                res = contrib[allowed]
                first = np.full(11, -1)
                first[res[::-1]] = allowed[::-1]
                one = np.bincount(res, minlength=11)[need] == 1
                sub, pick = sub[one], first[need[one]]
            ids = d[sub].copy()
            if k:
                ids[:, positions] = assign[pick]
            if pat >> 17 & 1:
                ids[:, CHECK_DIGIT] = _CHECK_VALUE[(ids[:, :CHECK_DIGIT] * _W).sum(axis=1) % 11]
            found_rows.append(sub)
            found_ids.append(ids)

    out = pl.Series("id", [None] * n, dtype=pl.String)
    if found_rows and sum(len(r) for r in found_rows):
        ids = np.concatenate(found_ids)
        chars = np.where(ids == 10, ord("X"), ids + 48).astype(np.uint8)
        texts = pl.Series(np.frombuffer(chars.tobytes(), dtype="S18").astype("U18"), dtype=pl.String)
        out = out.scatter(np.concatenate(found_rows), texts)
    return out


def masked_id_columns(frame: pl.DataFrame) -> dict[str, MaskedIds]:
    """The columns of ``frame`` that hold masked ID numbers (:func:`masked_ids`)."""
    return {n: m for n, s in frame.to_dict().items() if s.dtype != pl.Null and (m := masked_ids(s)) is not None}


def rebuilt_ids(frame: pl.DataFrame, real_ids: pl.Series | ValueSet,
                fragments: dict[str, MaskedIds] | None = None) -> list[tuple[str, list[str], int, str]]:
    """Rows of ``frame`` whose masked ID number, with the columns beside it, gives back a real one:
    (masked-ID column, the columns that completed it, rows, one rebuilt number). ``fragments``: the
    frame's :func:`masked_id_columns`, when the caller has them."""
    if len(real_ids) == 0 or frame.height == 0:
        return []
    cols = {n: s for n, s in frame.to_dict().items() if s.dtype != pl.Null}
    masked = masked_id_columns(frame) if fragments is None else fragments
    # hidden digits of the 17 before the check character: a birth date fills at most 8 of them, and
    # more than log10(MAX_COMBOS) left are never enumerated — such columns need no further look
    fewest = {n: m.fewest_hidden for n, m in masked.items()}
    enumerable = int(math.log10(MAX_COMBOS))
    frags = {n: m.fragments for n, m in masked.items() if fewest[n] - len(BIRTH_DIGITS) <= enumerable}
    if not frags:
        return []
    dates = {n: b for n, s in cols.items() if n not in frags and (b := date_column(s)) is not None}
    sexes = {n: p for n, s in cols.items() if n not in frags and n not in dates and (p := sex_parity(s)) is not None}
    out = []
    for name, frag in frags.items():
        hit = np.zeros(frame.height, dtype=bool)
        helpers: list[str] = []
        sample: str | None = None
        for dn in [None, *dates]:
            if dn is None and fewest[name] > enumerable:
                continue  # without a date beside it this mask hides too much
            for sn in [None, *sexes]:
                ids = rebuild_ids(frag, dates.get(dn) if dn else None, sexes.get(sn) if sn else None)
                real = member(ids, real_ids).to_numpy()
                if (real & ~hit).any():
                    helpers += [x for x in (dn, sn) if x and x not in helpers]
                    sample = sample or ids.filter(pl.Series(real & ~hit))[0]
                    hit |= real
        if hit.any():
            out.append((name, helpers, int(hit.sum()), sample or ""))
    return out


def people_table(ids: pl.Series, names: pl.Series, addresses: pl.Series | None = None) -> pl.DataFrame:
    """Persons of a base library for :class:`PeopleIndex`: (id, name, district) per version."""
    if addresses is None:
        addresses = pl.Series([None] * ids.len(), dtype=pl.String)
    frame = pl.DataFrame({"id": ids.cast(pl.String).str.strip_chars().str.to_uppercase(),
                          "name": names.cast(pl.String).str.strip_chars(), "address": addresses.cast(pl.String)})
    return frame.filter(pl.col("id").str.contains(r"^\d{17}[\dX]$") & pl.col("name").is_not_null()).select(
        "id", "name", rules.to_level(pl.col("address"), "district").alias("district")).unique()


# where a person is: the 6 leading digits of the ID number (a region code), or the 区/县 of the address
_PLACES = {"region": pl.col("id").str.slice(0, 6), "district": pl.col("district")}


def _combination(name: pl.Expr, birth: pl.Expr, place: pl.Expr) -> pl.Expr:
    """One text for (name, birth date, place), hashed as one value; null when any part is."""
    return pl.concat_str([name, birth, place], separator="\x1f")


class PeopleIndex:
    """What :func:`linked_people` looks persons up in, as hashes (:class:`ValueSet`, no name or ID
    number kept): the persons' names, and per kind of place the (name, birth date, place)
    combinations that belong to exactly one person; ``persons``: how many ID numbers.

    Built a page of persons at a time (:meth:`add`, then :meth:`finish`); a person is an ID number
    (its first 64-bit hash): one person's versions (the same ID, name and place) count once, two
    persons sharing a name, a birth date and a place count twice (neither is pinned down)."""

    def __init__(self, names: ValueSet | None = None, unique: dict[str, ValueSet] | None = None,
                 persons: int = 0) -> None:
        self.names = names or ValueSet.empty()
        self.unique = unique or {k: ValueSet.empty() for k in _PLACES}
        self.persons = persons
        self._names: list[tuple[np.ndarray, np.ndarray]] = []
        self._ids: list[np.ndarray] = []
        self._combos: dict[str, list[pl.DataFrame]] = {k: [] for k in _PLACES}

    @classmethod
    def of(cls, people: pl.DataFrame) -> PeopleIndex:
        """The index of a :func:`people_table` frame."""
        index = cls()
        index.add(people)
        return index.finish()

    def add(self, people: pl.DataFrame) -> None:
        """A page of :func:`people_table` rows."""
        if people.height == 0:
            return
        self._names.append(hash_pair(people.get_column("name").unique()))
        person = pl.Series("p", hash_pair(people.get_column("id"))[0])
        self._ids.append(np.unique(person.to_numpy()))
        for kind, place in _PLACES.items():
            combo = people.select(_combination(pl.col("name"), pl.col("id").str.slice(6, 8), place).alias("c"))
            frame = pl.DataFrame({"p": person, "c": combo.get_column("c")}).drop_nulls()
            a, b = hash_pair(frame.get_column("c"))
            self._combos[kind].append(pl.DataFrame({"p": frame.get_column("p"), "a": a, "b": b}).unique())

    def chunks(self, rows: int) -> Iterator[tuple[str, pl.DataFrame]]:
        """What the pages added so far hold, before :meth:`finish`, as (kind, frame) of about ``rows`` rows
        (consecutive pages put together) to be stored and read back into another index
        (:meth:`add_piece`): ``names`` (a, b), ``persons`` (p) and per kind of place (p, a, b)."""
        for group in runs(self._names, rows, lambda part: len(part[0])):  # names recur page after page
            yield "names", pair_frame(group).unique()
        for group in runs(self._ids, rows, len):
            yield "persons", pl.DataFrame({"p": np.concatenate(group)})
        for kind, parts in self._combos.items():
            for group in runs(parts, rows, lambda f: f.height):
                yield kind, pl.concat(group, rechunk=True)

    def take(self, other: PeopleIndex) -> None:
        """Every page another index was given, moved here (no copy)."""
        self._names += other._names
        self._ids += other._ids
        for kind in self._combos:
            self._combos[kind] += other._combos[kind]
        other._names, other._ids, other._combos = [], [], {k: [] for k in other._combos}

    def add_piece(self, kind: str, frame: pl.DataFrame) -> None:
        """A frame of :meth:`chunks` (of this index or another), as if its pages were added here."""
        if kind == "names":
            self._names.append(frame_pairs(frame))
        elif kind == "persons":
            self._ids.append(frame.get_column("p").to_numpy())
        elif kind in self._combos:
            self._combos[kind].append(frame.select("p", "a", "b"))
        else:
            raise ValueError(f"unknown piece of a people index: {kind}")

    def finish(self) -> PeopleIndex:
        """The index of every page added (the pages are let go)."""
        self.names = ValueSet.union(self._names)
        self.persons = len(np.unique(np.concatenate(self._ids))) if self._ids else 0
        for kind, parts in self._combos.items():
            if not parts:
                continue
            once = (pl.concat(parts).lazy().unique().group_by("a", "b").len().filter(pl.col("len") == 1)
                    .select("a", "b").collect(engine="streaming"))
            parts.clear()
            self.unique[kind] = ValueSet(once.get_column("a").to_numpy(), once.get_column("b").to_numpy())
        self._names, self._ids = [], []
        return self

    def __len__(self) -> int:
        return self.persons


def linked_people(frame: pl.DataFrame, index: PeopleIndex, public_columns: set[str],
                  hashed: dict[str, Lookup] | None = None,
                  fragments: dict[str, MaskedIds] | None = None) -> list[tuple[list[str], int, str]]:
    """Rows whose full name, full birth date and region match exactly one person of the index:
    (the three columns, rows, the name). ``hashed``: columns whose values (as :func:`_text` reads them,
    nulls aside) the caller hashed already; ``fragments``: the frame's :func:`masked_id_columns`."""
    if not index.persons or frame.height == 0:
        return []
    cols = {n: s for n, s in frame.to_dict().items() if s.dtype != pl.Null}
    hashed = hashed or {}

    def has_names(n: str, s: pl.Series) -> bool:
        if n in hashed:
            return hashed[n].any_in(index.names)
        return bool(index.names.contains(_text(_distinct_or_all(s))).any())

    names = [n for n, s in cols.items() if n not in public_columns and s.dtype == pl.String and has_names(n, s)]
    if not names:
        return []
    dates = {n: b for n, s in cols.items() if n not in names and (b := date_column(s, full=True)) is not None}
    if not dates:
        return []
    regions: dict[str, tuple[str, pl.Series]] = {}
    frags = masked_id_columns(frame) if fragments is None else fragments
    for n, s in cols.items():
        if n in names or n in dates:
            continue
        t = _text(s)
        if (m := frags.get(n)) is not None:
            regions[n] = ("region", m.fragments.str.slice(0, 6).to_frame("r").select(
                pl.when(pl.col("r").str.contains(r"^\d{6}$")).then(pl.col("r"))).to_series())
        elif t.str.contains(r"^\d{6}$").any():
            regions[n] = ("region", t.to_frame("r").select(pl.when(pl.col("r").str.contains(r"^\d{6}$"))
                                                           .then(pl.col("r"))).to_series())
        elif s.dtype == pl.String:
            district = t.to_frame("a").select(rules.to_level(pl.col("a"), "district")).to_series()
            if district.drop_nulls().len():
                regions[n] = ("district", district)
    out = []
    for nn in names:
        name = _text(cols[nn])
        for dn, birth in dates.items():
            for rn, (kind, place) in regions.items():
                q = pl.DataFrame({"name": name, "birth": birth, "place": place})
                combo = q.select(_combination(pl.col("name"), pl.col("birth"), pl.col("place"))).to_series()
                matched = index.unique[kind].contains(combo)
                if matched.any():
                    out.append(([nn, dn, rn], int(matched.sum()), name.filter(matched)[0]))
    return out
