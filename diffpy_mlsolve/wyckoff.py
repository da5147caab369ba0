"""Trial structures from a space group's Wyckoff positions.

Where no density shows a group, a large cell has nothing for the orbit
search to start from, and the site search in P1 ends in an overfit (so
failed all eight cubic cells of 40-56 atoms drawn from the test split,
from 3 nm G(r)s; Sr2YSbO6's network maps agree with no group).  A
crystallographer then does what FOX or a Wyckoff enumeration does: fill
the cell's contents with whole Wyckoff orbits of the groups the lattice
and the extinctions allow, draw the free coordinates, and keep what fits
the data.

:func:`wyckoff_trials` does that for every lattice: cubic, tetragonal,
hexagonal (the trigonal and hexagonal groups, R ones on hexagonal axes),
orthorhombic (each group in every distinct order of the cell's axes,
:func:`settings`), monoclinic (unique axis b along the cell's unique
one, cell choices 1 and 3) and triclinic (P-1): the groups of the
lattice (:data:`SYSTEM_GROUPS`) whose extinctions the extracted
intensities do not contradict (:func:`consistent`; a G(r)'s are not
tested), the most likely first (by the group's frequency in the
training split, its order and the extinctions confirmed,
:data:`ORDER_WEIGHT`); for each, the ways to fill every element's count
with at most :data:`MAX_SITES` orbits (:func:`_combinations`); for each
way, draws of the free coordinates (more for more of them,
:data:`DRAWS`), scored by the profile (or G(r)) Rwp and a clash
penalty; the best draw of each of the :data:`REFINED` best ways is
refined in its group
(:func:`~diffpy_mlsolve.sitesearch.refine_positions`), and the
:data:`KEEP` best are returned.  Random draws and a local refinement
find structures of few free coordinates only; where no refined draw
fits, ways are annealed (:func:`_anneal`, as FOX does): of the most
likely settings' ways and the best trials', those that anneal best
briefly (:func:`_screened`), which finds Tl2GeS3's 18 in P-1 and
Ba5P4's 15 in Pnma (36 atoms; second by the profile Rwp, which its
true structure fits to only twice the floor).  It reads nothing but the
data's scorer, the cell and its contents.
"""

from __future__ import annotations

import itertools
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "consistent",
    "cubic_groups",
    "group_prior",
    "is_cubic",
    "lattice_system",
    "settings",
    "system_groups",
    "unique_axis",
    "wyckoff_trials",
]

#: Orbits per element at most in a trial (simple structures first).
MAX_SITES = 3
#: Ways to fill the counts tried per group, fewest orbits first, one of
#: each set the normalizer relates: a test structure's own way is among
#: them (in its own group) for 69.9 % of the test split, 66.7 % counting
#: every way (benchmarks/bench_wyckoff_coverage.py).  32 ways reach
#: 75.6 %, and the trials alone solved 12 of 16 test cells of at most 32
#: atoms against 10 at 16 (bench_wyckoff_ways.py), but they spread the
#: draws (:data:`DRAW_BUDGET`) thinner: YGe3's trials then ended at
#: Cmc2_1, 2.31 times the floor, where 16 give its Cmcm at 1.10; at 64 a
#: P2_1/m cell's trials (test_trials_solve_a_monoclinic_cell) lost to Pm.
MAX_COMBINATIONS = 16
#: Draws of the free coordinates per way, each scored: DRAWS × 2^(free
#: coordinates; one without any), at most MAX_DRAWS (SnS in Pnma,
#: 4c + 4c: the best of 6 draws per way, refined, ended at Rwp 0.39, of
#: 100 at the truth's 0.036), and all ways' together at most
#: DRAW_BUDGET (scaled down evenly, to DRAWS at least).
DRAWS = 6
MAX_DRAWS = 100
DRAW_BUDGET = 30000
#: Of each way's draws, those of lowest Rwp whose clash is checked.
CLASH_CHECKED = 8
#: Complex phases held at once when scoring draws (memory: 16 bytes each).
PHASE_CHUNK = 4_000_000
#: Ways whose best draw is refined (the lowest scores first): a draw's
#: own score is a poor guide (CaAu2 in Imma, 8h + 4e: its best draw
#: scored 0.154 beside other groups' 0.138, and refined to the truth's
#: Rwp, 0.046, where theirs stayed at 0.136).
REFINED = 64
#: Trials returned (lowest score after refinement first).
KEEP = 8
#: Where no refined draw fits: the ways annealed in full
#: (:func:`_anneal`; which, :func:`_screened`), the chains run at once,
#: their steps, the
#: starting temperature (Rwp), and the best chain ends refined.  Random
#: draws do not find many free coordinates: of 200 refined random
#: starts in Tl2GeS3's own P-1 way (18), none reached the truth; 128
#: chains of 2000 steps did, 3 of their 10 best (Gd3AuO6, 12 free
#: coordinates: all 10).
ANNEAL_WAYS = 3
ANNEAL_CHAINS = 64
ANNEAL_STEPS = 2000
ANNEAL_T = 0.01
ANNEAL_REFINED = 4
#: Which ways are annealed: every way of the ANNEAL_SETTINGS most likely
#: settings, and the ways of the ANNEAL_WAYS best trials (with their
#: setting's first way), each annealed briefly (ANNEAL_SCREEN_CHAINS ×
#: ANNEAL_SCREEN_STEPS); the ANNEAL_WAYS lowest by their best end are
#: annealed in full.  A refined draw's score is a poor guide to a way of
#: many free coordinates: Ba5P4's own Pnma way (15) and NaFePO4's (11,
#: the 13th of its setting's 16), in the most likely setting, were not
#: among the best trials' (which ended at Pccn, 3.3 times the floor, and
#: Pnma, 7.1); the brief annealing put them 2nd of 7 and 1st of 16, and
#: annealed in full they refine to the structure: NaFePO4 of the third
#: random sample is solved since (benchmarks/bench_wyckoff_screen.py).
ANNEAL_SETTINGS = 2
ANNEAL_SCREEN_CHAINS = 32
ANNEAL_SCREEN_STEPS = 300
#: Phase products (chains × steps × 2 × the largest orbit × reflections
#: of distinct |F|^2, :class:`_Symmetric`) one way's annealing may cost
#: at most, fewer steps where it would cost more (RbB3O5's way in
#: P2_12_12_1, nine orbits of 4a, 3825 of its 13575 reflections: 2e6 a
#: step, 2000 steps in 85-94 s beside two other jobs; 0.8 s a step
#: when each step scored the whole cell at every reflection).
ANNEAL_BUDGET = 1e10
#: spglib tolerances (Å) that find a trial's group: exact orbits; a
#: loose tolerance could change the metric (SnS's 3.98 x 4.33 Å face
#: read as square).
TRIAL_SYMPREC = (1e-3, 0.01)
#: Group settings tried at most, the most likely first (:data:`ORDER_WEIGHT`,
#: :data:`EXTINCTION_WEIGHT`).  On the realistic patterns of the first
#: 40 tetragonal, trigonal, hexagonal and orthorhombic validation
#: structures the true group was the first allowed for 45 %, among the
#: first 3 for 68 %, the first 10 for 80 %, the first 40 for 97 % (by
#: order, then extinctions: 28, 53, 80 and 95 %).
MAX_SETTINGS = 40
#: A setting's likelihood: ln(prior of the group) + ORDER_WEIGHT ln(its
#: order) + EXTINCTION_WEIGHT × (the isolated groups of reflections it
#: forbids that are weak): a common group first, a high order and
#: confirmed extinctions before a low order that explains nothing.
ORDER_WEIGHT = 2.0
EXTINCTION_WEIGHT = 0.25
#: Space groups counted on the training split (tools/count_formula_units.py).
GROUP_TABLE = Path(__file__).with_name("data") / "space_groups.json"
#: The space groups of each lattice searched (standard settings).
SYSTEM_GROUPS = {
    "cubic": range(195, 231),
    "tetragonal": range(75, 143),
    "hexagonal": range(143, 195),
    "orthorhombic": range(16, 75),
    "monoclinic": range(3, 16),
    "triclinic": range(2, 3),  # P-1 (P1's sites are the site search's)
}
#: A group's extinctions are contradicted when the median normalised
#: intensity of the isolated groups of reflections it forbids
#: (:func:`~diffpy_mlsolve.phasing.extinction_ratios`) is above this
#: (on those 40 patterns: the true group kept for 97 %, and a median 45
#: settings of the 52-235 the lattices have).
EXTINCTION_LIMIT = 0.05


def is_cubic(lattice, tol: float = 1e-4) -> bool:
    """Whether a cell (a, b, c, α, β, γ) is metrically cubic."""
    a, b, c, al, be, ga = (float(v) for v in lattice)
    return (
        abs(a - b) <= tol * a
        and abs(a - c) <= tol * a
        and all(abs(x - 90.0) <= 1e-3 for x in (al, be, ga))
    )


def lattice_system(lattice, tol: float = 1e-4) -> str:
    """ "cubic", "tetragonal", "hexagonal" (a = b, γ = 120°: the trigonal
    and hexagonal groups), "orthorhombic", "monoclinic" (one angle not
    90°: :func:`unique_axis`) or "triclinic": the lattice whose metric
    the cell has (as the conventional cell gives it: a tetragonal or
    hexagonal cell's unique axis c)."""
    a, b, c, al, be, ga = (float(v) for v in lattice)
    right = all(abs(x - 90.0) <= 1e-3 for x in (al, be, ga))
    same_ab = abs(a - b) <= tol * a
    if is_cubic(lattice, tol):
        return "cubic"
    if right and same_ab:
        return "tetragonal"
    if (
        same_ab
        and abs(al - 90) <= 1e-3
        and abs(be - 90) <= 1e-3
        and abs(ga - 120) <= 1e-3
    ):
        return "hexagonal"
    if right:
        return "orthorhombic"
    if unique_axis(lattice) is not None:
        return "monoclinic"
    return "triclinic"


def unique_axis(lattice) -> int | None:
    """The axis (0, 1, 2) of a monoclinic cell's one angle that is not
    90° (β: the b axis), or None when not exactly one is."""
    odd = [abs(float(x) - 90.0) > 1e-3 for x in lattice[3:6]]
    return odd.index(True) if sum(odd) == 1 else None


@lru_cache(maxsize=None)
def _group(number: int):
    from pyxtal.symmetry import Group

    return Group(number)


def system_groups(system: str, centring: str | None = None) -> list[int]:
    """The space groups of a lattice (:data:`SYSTEM_GROUPS`) of a lattice
    centring (the first letter of the standard symbol; all for None),
    highest order first, then by number."""
    out = []
    for number in SYSTEM_GROUPS[system]:
        g = _group(number)
        if centring is None or g.symbol[0] == centring:
            out.append((-len(g.Wyckoff_positions[0].ops), number))
    return [n for _, n in sorted(out)]


def cubic_groups(centring: str | None = None) -> list[int]:
    """Cubic space groups (195-230) of a lattice centring ("P", "F",
    "I"; all for None), highest order first, then by number."""
    return system_groups("cubic", centring)


@lru_cache(maxsize=None)
def _group_counts() -> dict[int, int]:
    counts = json.loads(GROUP_TABLE.read_text())["counts"]
    return {int(n): c for n, c in counts.items()}


def group_prior(number: int, system: str) -> float:
    """How often a structure of the lattice ``system`` (as
    :data:`SYSTEM_GROUPS` has it) is in group ``number`` in the training
    split, with one count added to each of the lattice's groups
    (orthorhombic: Pnma 30 %, Cmcm 15 %, Imma 3 %, Pmmm 0.9 %)."""
    counts = _group_counts()
    groups = SYSTEM_GROUPS[system]
    total = sum(counts.get(n, 0) for n in groups)
    return (counts.get(int(number), 0) + 1) / (total + len(groups))


def _operations(number: int, axes=(0, 1, 2)) -> list:
    """The group's operations (R, t) on the data's axes, the standard
    setting's axis i being the data's axis ``axes[i]``."""
    perm = np.zeros((3, 3))
    perm[list(axes), [0, 1, 2]] = 1.0
    out = []
    for op in _group(number).Wyckoff_positions[0].ops:
        rot = perm @ np.asarray(op.rotation_matrix, float) @ perm.T
        out.append((np.rint(rot).astype(int), perm @ op.translation_vector))
    return out


def settings(number: int, system: str, unique: int = 1) -> list[tuple]:
    """The axis orders that give the group's distinct settings on the
    data's axes (each as :func:`_operations` takes it): the six of an
    orthorhombic group that change its operations (Pnma's six, Pmmm's
    one); the two of a monoclinic group with its unique axis b along
    the data's ``unique`` axis (P2_1/c and P2_1/a: cell choices 1 and 3;
    P2_1/n's is not tried); the standard one for the other lattices."""
    if system == "orthorhombic":
        orders = itertools.permutations(range(3))
    elif system == "monoclinic":
        orders = [
            axes
            for axes in itertools.permutations(range(3))
            if axes[1] == unique
        ]
    else:
        return [(0, 1, 2)]
    seen, out = set(), []
    for axes in orders:
        key = frozenset(
            (tuple(rot.ravel()), tuple(np.round(np.mod(t, 1.0), 4) % 1.0))
            for rot, t in _operations(number, axes)
        )
        if key not in seen:
            seen.add(key)
            out.append(axes)
    return out


def _forbidden(number: int, axes):
    """hkl (H, 3) -> (H,) bool: the group's systematic absences on the
    data's axes (an operation that fixes h whose translation puts a
    phase on it)."""
    ops = _operations(number, axes)

    def forbidden(hkl):
        hkl = np.asarray(hkl, int).reshape(-1, 3)
        out = np.zeros(len(hkl), bool)
        for rot, t in ops:
            fixed = np.all(hkl @ rot == hkl, axis=1)
            phase = hkl @ t
            out |= fixed & (np.abs(phase - np.rint(phase)) > 1e-6)
        return out

    return forbidden


def consistent(reflections, number: int, axes=(0, 1, 2)) -> tuple:
    """(whether the extracted intensities allow the group's extinctions
    in this setting, how many isolated groups of reflections it forbids
    are weak): the median normalised intensity of those it forbids is at
    most :data:`EXTINCTION_LIMIT` (or too few of them to judge)."""
    from diffpy_mlsolve.phasing import extinction_ratios

    ratios = extinction_ratios(reflections, _forbidden(number, axes))
    if ratios.size == 0:
        return True, 0
    return (
        bool(np.median(ratios) <= EXTINCTION_LIMIT),
        int((ratios <= EXTINCTION_LIMIT).sum()),
    )


def _candidate_settings(scorer, system, centring, unique: int = 1) -> list:
    """(group number, axes) to try, at most :data:`MAX_SETTINGS`: the
    lattice's groups (of ``centring``), each setting whose extinctions a
    powder pattern's intensities allow (a G(r)'s are not tested), the
    most likely first (:data:`ORDER_WEIGHT`)."""
    refl = getattr(scorer, "reflections", None)
    powder = refl is not None and "envelope" not in getattr(refl, "curves", {})
    out = []
    for number in system_groups(system, centring):
        order = len(_group(number).Wyckoff_positions[0].ops)
        for axes in settings(number, system, unique):
            confirmed = 0
            if powder:
                ok, confirmed = consistent(refl, number, axes)
                if not ok:
                    continue
            score = (
                math.log(group_prior(number, system))
                + ORDER_WEIGHT * math.log(order)
                + EXTINCTION_WEIGHT * confirmed
            )
            out.append((-score, number, axes))
    out.sort()
    return [(number, axes) for _, number, axes in out[:MAX_SETTINGS]]


#: A generic metric of each lattice (a, b, c, α, β, γ in the standard
#: setting) that :func:`_letter_maps` keeps.
GENERIC_CELLS = {
    "cubic": (5.0, 5.0, 5.0, 90, 90, 90),
    "tetragonal": (5.0, 5.0, 7.1, 90, 90, 90),
    "hexagonal": (5.0, 5.0, 7.1, 90, 90, 120),
    "orthorhombic": (5.0, 6.3, 7.1, 90, 90, 90),
    "monoclinic": (5.0, 6.3, 7.1, 90, 101.3, 90),
    "triclinic": (5.0, 6.3, 7.1, 81.7, 101.3, 95.9),
}


@lru_cache(maxsize=None)
def _letter_maps(number: int) -> tuple:
    """How the group's normalizer renames its Wyckoff letters: one dict
    (letter -> letter) per coset of the group in it whose linear part
    keeps the lattice's generic metric (another origin, inversion, a
    turn of a square or hexagonal net; not the axis swaps of an
    orthorhombic group, which :func:`settings` tries as settings), from
    pyxtal's table (Bilbao's Wyckoff sets).  Two ways one renaming turns
    into each other give the same structures moved: Pm-3m's Cs 1a + Cl
    1b and Cs 1b + Cl 1a."""
    from pymatgen.core.operations import SymmOp

    from diffpy_mlsolve.atoms import _lattice_matrix

    # P1 is in no lattice's list (its sites are the P1 search's)
    system = next(
        (s for s, r in SYSTEM_GROUPS.items() if number in r), "triclinic"
    )
    basis = _lattice_matrix(GENERIC_CELLS[system])
    metric = basis @ basis.T
    table = _group(number).get_alternatives()
    letters = "abcdefghijklmnopqrstuvwxyzA"  # pyxtal's 27th is "A"
    out = []
    for coset, row in zip(
        table["Coset Representative"], table["Transformed WP"]
    ):
        rot = SymmOp.from_xyz_str(coset).rotation_matrix
        if np.allclose(rot.T @ metric @ rot, metric, atol=1e-6):
            out.append(dict(zip(letters, row.split())))
    return tuple(out)


def _canonical(number: int, combo) -> tuple:
    """A key shared by the ways the group's normalizer relates
    (:func:`_letter_maps`)."""
    return min(
        tuple(
            tuple(sorted(label[:-1] + swap[label[-1]] for label in labels))
            for labels in combo
        )
        for swap in _letter_maps(number)
    )


def _combinations(number: int, counts: tuple, distinct: bool = True) -> list:
    """Up to :data:`MAX_COMBINATIONS` ways to fill ``counts`` with the
    group's Wyckoff orbits (:func:`_fillings`: at most :data:`MAX_SITES`
    per element, or the fewest that can hold it) and a position without
    free coordinates used once at most, fewest orbits first: each a
    list, per element, of Wyckoff labels ("24e").  With ``distinct``
    one of each set of ways the group's normalizer relates
    (:func:`_canonical`): SrAgSb's three 2-fold orbits in P6_3/mmc
    have 24 ways, 12 distinct; its own was the 19th, beyond the 16
    tried, of which eight repeated another; it is now the 10th.

    Built element by element (pyxtal's ``list_wyckoff_combinations``
    enumerates every way first: 21 GB for KYb(BH4)4's 64 H in an
    orthorhombic group)."""
    g = _group(number)
    positions = [
        (int(wp.multiplicity), f"{wp.multiplicity}{wp.letter}")
        for wp in g.Wyckoff_positions
    ]
    fixed = {
        label
        for _, label in positions
        if g.get_wyckoff_position(label).get_dof() == 0
    }
    per_element = [_fillings(positions, int(n)) for n in counts]
    if any(not options for options in per_element):
        return []
    lengths = [[len(f) for f in options] for options in per_element]
    # the fewest and most orbits the elements after each one can take
    lo = np.cumsum([0] + [min(n) for n in lengths[::-1]])[::-1]
    hi = np.cumsum([0] + [max(n) for n in lengths[::-1]])[::-1]
    bounds = list(zip(lo[1:], hi[1:]))
    out: list = []
    seen = set() if distinct else None
    for total in range(int(lo[0]), int(hi[0]) + 1):
        _product(per_element, bounds, total, fixed, [], out, number, seen)
        if len(out) >= MAX_COMBINATIONS:
            break
    return out[:MAX_COMBINATIONS]


def _fillings(positions, count: int) -> list:
    """The multisets of Wyckoff positions (multiplicity, label) whose
    multiplicities sum to ``count``, as label lists, fewest first: of at
    most :data:`MAX_SITES` orbits, or where more are needed (P-1's 14 O
    of Nd2CoTe2(SO7)2 fill seven 2i, P2_12_12_1's 32 F of RuOF4 eight
    4a), of the fewest only, at most :data:`MAX_COMBINATIONS` of them."""
    mults = [m for m, _ in positions]
    fewest = [0] + [math.inf] * count  # orbits that hold each count
    for c in range(1, count + 1):
        fewest[c] = 1 + min(
            (fewest[c - m] for m in mults if m <= c), default=math.inf
        )
    if fewest[count] == math.inf:
        return []
    if fewest[count] <= MAX_SITES:
        sizes, cap = range(fewest[count], MAX_SITES + 1), math.inf
    else:
        sizes, cap = [fewest[count]], MAX_COMBINATIONS
    out: list = []

    def pick(start, left, k, chosen):
        # positions in the order given (itertools'
        # combinations_with_replacement order), pruned by the fewest
        if len(out) >= cap or fewest[left] > k:
            return
        if k == 0:
            out.append([positions[i][1] for i in chosen])
            return
        for i in range(start, len(positions)):
            if mults[i] <= left:
                pick(i, left - mults[i], k - 1, chosen + [i])

    for k in sizes:
        pick(0, count, k, [])
    return out


def _product(
    per_element, bounds, total, fixed, chosen, out, number, seen
) -> None:
    """Append to ``out`` the ways (one filling per element) with
    ``total`` orbits in all and no fixed position used twice, until it
    holds :data:`MAX_COMBINATIONS`; ``bounds``: the fewest and most
    orbits the elements after each can take; ``seen``: the
    :func:`_canonical` keys of the ways in ``out`` (None: keep every
    way)."""
    if len(out) >= MAX_COMBINATIONS:
        return
    i = len(chosen)
    if i == len(per_element):
        if total == 0:
            if seen is not None:
                key = _canonical(number, chosen)
                if key in seen:
                    return
                seen.add(key)
            out.append([list(c) for c in chosen])
        return
    lo, hi = bounds[i]
    used = [label for c in chosen for label in c if label in fixed]
    for filling in per_element[i]:
        n = len(filling)
        if not lo <= total - n <= hi:
            continue
        mine = [label for label in filling if label in fixed]
        if len(set(mine)) < len(mine) or set(mine) & set(used):
            continue
        _product(
            per_element,
            bounds,
            total - n,
            fixed,
            chosen + [filling],
            out,
            number,
            seen,
        )


def _draws(number, combo) -> int:
    """Draws of a way's free coordinates (see :data:`DRAWS`)."""
    g = _group(number)
    # a Python int: pyxtal's numpy int64 made 2**63 and up 0 draws
    # (Yb11(SnBi4)2: ways of 63 in P4, P-4 and the 4-fold screw groups)
    dof = int(
        sum(
            g.get_wyckoff_position(label).get_dof()
            for labels in combo
            for label in labels
        )
    )
    if dof == 0:  # nothing to draw
        return 1
    return min(MAX_DRAWS, DRAWS * 2**dof)


def _way_map(number, combo, elements, axes=(0, 1, 2)):
    """A way to fill the cell as an affine map of one free point per
    orbit: (A (n, 3, 3), b (n, 3), orbit (n,), elements (n,)), atom j at
    A_j v_(orbit j) + b_j on the data's axes for any points v (norb, 3)
    (each orbit's point put on its Wyckoff position by the position's
    first operation, then imaged by its operations, as pyxtal's
    ``apply_ops`` does)."""
    g = _group(number)
    perm = np.zeros((3, 3))
    perm[list(axes), [0, 1, 2]] = 1.0
    mats, shifts, orbit, els = [], [], [], []
    k = 0
    for element, labels in zip(elements, combo):
        for label in labels:
            wp = g.get_wyckoff_position(label)
            p0 = np.asarray(wp.ops[0].rotation_matrix, float)
            t0 = np.asarray(wp.ops[0].translation_vector, float)
            for op in wp.ops:
                rot = np.asarray(op.rotation_matrix, float)
                mats.append(perm @ rot @ p0)
                shifts.append(perm @ (rot @ t0 + op.translation_vector))
                orbit.append(k)
                els.append(element)
            k += 1
    return np.array(mats), np.array(shifts), np.array(orbit), els


def _place(way, points) -> np.ndarray:
    """(K, n, 3) the atoms of K sets of free ``points`` (K, norb, 3) of a
    :func:`_way_map`."""
    mats, shifts, orbit, _ = way
    frac = np.einsum("nij,knj->kni", mats, points[:, orbit]) + shifts
    return np.mod(frac, 1.0)


class _Symmetric:
    """A scorer seen by atoms in whole orbits of a group: their |F|^2 is
    the same at reflections related by the group's rotations and
    Friedel's law, so their structure factors are needed at one of each
    such set only (an orthorhombic cell's: a quarter of the scorer's
    reflections, a cubic one's a 24th).  It has what
    :func:`_factors` and :func:`_draw_rwp` use: ``hkl``,
    ``form_factor`` and ``rwp_of_many``."""

    def __init__(self, scorer, number: int, axes=(0, 1, 2)):
        from scipy import sparse

        from diffpy_mlsolve.physics.reflections import equivalent_reflections

        hkl = np.asarray(scorer.hkl, float)
        first, inverse = equivalent_reflections(
            hkl, [r for r, _ in _operations(number, axes)]
        )
        self.scorer = scorer
        self.index = first  # of the scorer's reflections kept
        self.hkl = np.asarray(scorer.hkl, float)[first]
        to_kept = sparse.csr_matrix(
            (np.ones(len(hkl)), (np.arange(len(hkl)), inverse)),
            shape=(len(hkl), len(first)),
        )
        self._sum = scorer._sum @ to_kept
        self._f: dict = {}

    def form_factor(self, element: str, biso: float) -> np.ndarray:
        key = (element, biso)
        if key not in self._f:
            self._f[key] = self.scorer.form_factor(element, biso)[self.index]
        return self._f[key]

    def rwp_of_many(self, f: np.ndarray) -> np.ndarray:
        """(K,) Rwp of K sets of structure factors at ``hkl``, ``f``
        (H', K): the scorer's, at all its reflections."""
        return self.scorer.rwp_of_groups(self._sum @ (np.abs(f) ** 2))


def _anneal(
    scorer,
    way,
    rng,
    chains=None,
    steps=None,
    contacts=None,
    most: int = ANNEAL_STEPS,
    budget: float = ANNEAL_BUDGET,
) -> np.ndarray:
    """(K, n, 3) the best atoms each of ``chains`` annealing runs found in
    a way, lowest Rwp first (:func:`_draw_rwp`; all run at once): each
    step moves one orbit's free point of each chain (Gaussian, σ from
    0.16 to 0.01 of the cell; one move in ten a new random point),
    kept by the Metropolis rule at a temperature falling from
    :data:`ANNEAL_T` to 0.0005 in Rwp, as FOX's annealing.  A step
    updates each chain's structure factors by its moved orbit's change
    only (RbB3O5's 36 atoms, nine orbits of 4a: 0.8 s a step for the
    whole cell's, 13575 reflections).  By default ``most`` steps
    (:data:`ANNEAL_STEPS`), fewer where they would cost more than
    ``budget`` phase products (:data:`ANNEAL_BUDGET`).  ``contacts``:
    (the cell's matrix, (n, n) the atoms' contact limits) adds
    :func:`_clashes` to the Rwp (without it light atoms pile up:
    RbB3O5's best ends, at Rwp 0.043, refined apart to 0.09)."""
    mats, _, orbit, els = way
    norb = orbit.max() + 1
    members = [np.flatnonzero(orbit == k) for k in range(norb)]
    chains = ANNEAL_CHAINS if chains is None else chains
    if steps is None:
        largest = max(len(m) for m in members)
        cost = chains * 2 * largest * len(scorer.hkl)
        steps = int(min(most, budget // cost))
    free = np.flatnonzero([np.abs(mats[m]).sum() > 0 for m in members])
    points = rng.random((chains, norb, 3))
    f = _factors(scorer, _place(way, points), els)

    def score(rwp, points):
        if contacts is None:
            return rwp
        return rwp + _clashes(_place(way, points), *contacts)

    rwp = score(scorer.rwp_of_many(f), points)
    best, best_rwp = points.copy(), rwp.copy()
    if free.size == 0:
        return _place(way, best[:1])
    rows = np.arange(chains)
    for step in range(steps):
        frac = step / steps
        temp = ANNEAL_T * (0.0005 / ANNEAL_T) ** frac
        sigma = 0.15 * (1 - frac) + 0.01
        moved = points.copy()
        k = free[rng.integers(free.size, size=chains)]
        moved[rows, k] += rng.normal(size=(chains, 3)) * sigma
        jump = rng.random(chains) < 0.1
        moved[jump, k[jump]] = rng.random((int(jump.sum()), 3))
        moved = np.mod(moved, 1.0)
        trial = f.copy()
        for orb in np.unique(k):
            c = np.flatnonzero(k == orb)
            atoms = members[orb]
            sub = (way[0][atoms], way[1][atoms], np.zeros(len(atoms), int))
            mine = [els[j] for j in atoms]
            trial[:, c] += _factors(
                scorer, _place((*sub, mine), moved[c][:, [orb]]), mine
            ) - _factors(
                scorer, _place((*sub, mine), points[c][:, [orb]]), mine
            )
        new = score(scorer.rwp_of_many(trial), moved)
        with np.errstate(over="ignore"):
            keep = (new < rwp) | (
                rng.random(chains) < np.exp(-(new - rwp) / temp)
            )
        points[keep], rwp[keep] = moved[keep], new[keep]
        f[:, keep] = trial[:, keep]
        better = rwp < best_rwp
        best[better], best_rwp[better] = points[better], rwp[better]
    return _place(way, best[np.argsort(best_rwp)])


def _ways(scorer, elements, counts, lattice, centring=None) -> tuple:
    """(ways, first): every way (:func:`_combinations`) to fill the
    ``counts`` of ``elements`` in each setting to try
    (:func:`_candidate_settings`), the most likely first, each (group
    number, :func:`_way_map`, Wyckoff labels, the setting's
    :class:`_Symmetric` view of the scorer); ``first``: the index of
    each way's setting's first way."""
    system = lattice_system(lattice)
    unique = unique_axis(lattice) if system == "monoclinic" else 1
    ways, first = [], []
    for number, axes in _candidate_settings(scorer, system, centring, unique):
        start = len(ways)
        view = None  # the setting's reflections of distinct |F|^2
        for combo in _combinations(number, counts):
            view = view or _Symmetric(scorer, number, axes)
            way = _way_map(number, combo, elements, axes)
            ways.append((number, way, combo, view))
            first.append(start)
    return ways, first


def _screened(ways, first, trials, matrix, limit, rng) -> list:
    """The indices of the :data:`ANNEAL_WAYS` ways (of ``ways``, each
    (group, way map, labels, view); ``first``: the index of each way's
    setting's first way) to anneal in full: of every way of the
    :data:`ANNEAL_SETTINGS` most likely settings (the first in
    ``ways``), the ways of the ANNEAL_WAYS best ``trials`` (each
    (score, sym, group, way index), best first) and their setting's
    first (Tl2GeS3's way, all in P-1's 2i, refines worse from random
    draws than ways with fixed positions), those whose best end of a
    brief annealing (:data:`ANNEAL_SCREEN_CHAINS` ×
    :data:`ANNEAL_SCREEN_STEPS`, the budget scaled alike) scores
    lowest (Rwp plus the clash)."""
    starts = sorted(set(first))[:ANNEAL_SETTINGS]
    pool = [i for i, start in enumerate(first) if start in starts]
    best = list(dict.fromkeys(t[3] for t in trials))[:ANNEAL_WAYS]
    pool += [j for i in best for j in (i, first[i])]
    pool = list(dict.fromkeys(pool))
    if len(pool) <= ANNEAL_WAYS:
        return pool
    work = ANNEAL_SCREEN_CHAINS * ANNEAL_SCREEN_STEPS
    budget = ANNEAL_BUDGET * work / (ANNEAL_CHAINS * ANNEAL_STEPS)
    scores = []
    for i in pool:
        view, way = ways[i][3], ways[i][1]
        els = way[3]
        pairs = np.array([[limit[a][b] for b in els] for a in els])
        end = _anneal(
            view,
            way,
            rng,
            chains=ANNEAL_SCREEN_CHAINS,
            contacts=(matrix, pairs),
            most=ANNEAL_SCREEN_STEPS,
            budget=budget,
        )[:1]
        score = _draw_rwp(view, end, els) + _clashes(end, matrix, pairs)
        scores.append((float(score[0]), i))
    return [i for _, i in sorted(scores)[:ANNEAL_WAYS]]


def _clashes(fracs, matrix, limits) -> np.ndarray:
    """(K,) :func:`_clash` of K sets of atoms ``fracs`` (K, n, 3), their
    (n, n) contact ``limits``, each pair at its nearest image by
    rounding (which can miss a closer one in a skewed cell)."""
    d = fracs[:, :, None, :] - fracs[:, None, :, :]
    d -= np.round(d)
    dist = np.sqrt(((d @ matrix) ** 2).sum(-1)) / limits
    n = fracs.shape[1]
    dist[:, np.arange(n), np.arange(n)] = np.inf
    return np.maximum(0.0, 1.0 - dist.min((1, 2)))


def _factors(scorer, fracs, elements, biso: float = 1.0) -> np.ndarray:
    """(H, K) the structure factors at the scorer's reflections of K sets
    of atoms, ``fracs`` (K, n, 3) on the data's axes, ``elements`` (n,)
    theirs, all at ``biso``: each phase exp(2πi h·x) a product of three
    looked up in tables of exp(2πi h x) per axis (no exponential per
    reflection), :data:`PHASE_CHUNK` phases at a time."""
    hkl = np.rint(np.asarray(scorer.hkl, float)).astype(int)
    top = np.abs(hkl).max(0)
    index = hkl + top  # into tables of -top..top
    els = np.asarray(elements)
    amp = {e: scorer.form_factor(e, biso)[:, None] for e in set(elements)}
    out = np.empty((len(hkl), len(fracs)), complex)
    step = max(1, PHASE_CHUNK // max(len(hkl) * fracs.shape[1], 1))
    for i in range(0, len(fracs), step):
        x = fracs[i : i + step]
        phase = None
        for axis in range(3):
            h = np.arange(-top[axis], top[axis] + 1)
            table = np.exp(2j * np.pi * x[:, :, axis, None] * h)
            part = table[:, :, index[:, axis]]  # (k, n, H)
            phase = part if phase is None else phase * part
        out[:, i : i + step] = sum(
            a * phase[:, els == e, :].sum(1).T for e, a in amp.items()
        )
    return out


def _draw_rwp(scorer, fracs, elements, biso: float = 1.0) -> np.ndarray:
    """(K,) the scorer's Rwp of K draws of one way, ``fracs`` (K, n, 3)
    on the data's axes, ``elements`` (n,) their atoms, all at ``biso``
    (no B shift): the structure factors of the extracted reflections at
    once (:func:`_factors`,
    :meth:`~diffpy_mlsolve.sitesearch.ProfileScorer.rwp_of_many`), a
    chunk of draws at a time."""
    n = max(len(scorer.hkl) * fracs.shape[1], 1)
    step = max(1, PHASE_CHUNK // n)
    out = np.empty(len(fracs))
    for i in range(0, len(fracs), step):
        out[i : i + step] = scorer.rwp_of_many(
            _factors(scorer, fracs[i : i + step], elements, biso)
        )
    return out


def _clash(frac, elements, matrix, limit) -> float:
    """How far (as a fraction of its limit) the closest pair is inside
    its limit; 0 when none is."""
    from diffpy_mlsolve.atoms import _pair_distances

    dist = _pair_distances(frac, matrix)
    lim = np.array([[limit[a][b] for b in elements] for a in elements])
    np.fill_diagonal(dist, math.inf)
    return float(max(0.0, 1.0 - (dist / lim).min()))


def wyckoff_trials(
    scorer,
    contents,
    lattice,
    centring: str | None = None,
    *,
    seed: int = 0,
    min_distance: float = 0.9,
    keep: int = KEEP,
    fits: float | None = None,
) -> list:
    """The best-scoring fillings of a cell with Wyckoff orbits.

    Parameters
    ----------
    scorer : ProfileScorer or PDFScorer
        The data, in ``lattice``.
    contents : Mapping
        Element -> atoms in the cell.
    lattice : (a, b, c, α, β, γ)
        The conventional cell (:func:`lattice_system`; hexagonal axes for
        trigonal groups).
    centring : str, optional
        Only the groups of this lattice centring (the first letter of the
        standard symbol: "P", "F", "I", ...); for None every group the
        extinctions allow.
    seed : int
        Seeds the draws of the free coordinates.
    min_distance : float
        With the atomic radii, the clash limit
        (:func:`~diffpy_mlsolve.atoms.contact_limits`).
    keep : int
        Trials returned.
    fits : float, optional
        A score that fits the data: when no refined draw reaches it,
        :data:`ANNEAL_WAYS` ways are annealed (:func:`_anneal`; those of
        the most likely settings and the best trials that anneal best
        briefly, :func:`_screened`) and the :data:`ANNEAL_REFINED` best
        ends of each refined too.  None: no annealing.

    Returns
    -------
    list of (score, SymmetrizedStructure, group number drawn in)
        The best draws of the :data:`REFINED` best ways (and annealed
        ones), each refined in its group
        (:func:`~diffpy_mlsolve.sitesearch.refine_positions`; found at
        :data:`TRIAL_SYMPREC`, in spglib's standard setting), lowest
        score (profile Rwp plus the clash) first; empty for contents no
        group's orbits can hold.
    """
    from diffpy_mlsolve.atoms import _lattice_matrix, contact_limits
    from diffpy_mlsolve.errors import MLSolveError
    from diffpy_mlsolve.sitesearch import refine_positions
    from diffpy_mlsolve.structures import (
        CrystalArrays,
        _symbol_to_z,
        _z_to_symbol,
    )
    from diffpy_mlsolve.symmetry import find_symmetry

    elements = sorted(contents)
    counts = tuple(int(contents[e]) for e in elements)
    matrix = _lattice_matrix(lattice)
    limit = contact_limits(elements, min_distance)
    rng = np.random.default_rng(seed)
    formula = "".join(f"{e}{n}" for e, n in zip(elements, counts))
    ways, first = _ways(scorer, elements, counts, lattice, centring)
    draws = np.array([_draws(number, combo) for number, _, combo, _ in ways])
    if draws.sum() > DRAW_BUDGET:
        draws = np.maximum(DRAWS, draws * DRAW_BUDGET // draws.sum())

    def refined(frac, way):
        """(score, sym) of atoms of a way refined in their group; None
        for atoms that coincide (in spglib's group or on refinement: an
        annealed atom within 1e-3 of a special position merges with its
        image) or leave the data's cell."""
        els = way[3]
        crystal = CrystalArrays(
            np.asarray(lattice, float),
            frac,
            np.array([_symbol_to_z(e, e) for e in els]),
            np.ones(len(els)),
            np.ones(len(els)),
            formula,
        )
        try:
            sym = find_symmetry(crystal, TRIAL_SYMPREC)
            sym, r = refine_positions(scorer, sym, min_distance=min_distance)
        except MLSolveError:
            return None
        out = sym.to_crystal()
        if out.natoms != len(els):
            return None
        els = [_z_to_symbol(int(z)) for z in out.numbers]
        return r + _clash(out.frac, els, matrix, limit), sym

    scored = []  # the best draw of each way: (score, atoms, way index)
    for i, ((number, way, _, view), ndraw) in enumerate(zip(ways, draws)):
        points = rng.random((int(ndraw), way[2].max() + 1, 3))
        fracs = _place(way, points)
        rwp = _draw_rwp(view, fracs, way[3])
        best = min(
            (float(rwp[k]) + _clash(fracs[k], way[3], matrix, limit), k)
            for k in np.argsort(rwp)[:CLASH_CHECKED]
        )
        scored.append((best[0], fracs[best[1]], i))
    scored.sort(key=lambda t: t[0])
    out = []  # (score, sym, group number, way index)
    for _, frac, i in scored[:REFINED]:
        got = refined(frac, ways[i][1])
        if got is not None:
            out.append((*got, ways[i][0], i))
    out.sort(key=lambda t: t[0])
    if fits is not None and not (out and out[0][0] <= fits):
        # nothing fits: anneal the ways that anneal best briefly
        for i in _screened(ways, first, out, matrix, limit, rng):
            els = ways[i][1][3]
            pairs = np.array([[limit[a][b] for b in els] for a in els])
            ends = _anneal(
                ways[i][3], ways[i][1], rng, contacts=(matrix, pairs)
            )
            for frac in ends[:ANNEAL_REFINED]:
                got = refined(frac, ways[i][1])
                if got is not None:
                    out.append((*got, ways[i][0], i))
        out.sort(key=lambda t: t[0])
    return [t[:3] for t in out[:keep]]
