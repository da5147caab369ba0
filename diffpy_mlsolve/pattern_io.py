"""Reading pattern files: .xy .xye .dat .txt .csv .chi .gr .fq .sq .iq
and diffpy.utils DiffractionObjects, into :class:`Pattern`.

Every problem is a typed error naming the file, the line where useful,
and the fix; nothing is guessed silently (a 2θ file without a wavelength
loads, but any conversion to Q asks for one).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from diffpy_mlsolve.errors import (
    PatternFileError,
    PatternFormatError,
    WavelengthError,
)
from diffpy_mlsolve.pattern import (
    _ALIASES,
    _HINT,
    XTYPES,
    Pattern,
    _check,
    _check_content,
    _xtype,
)
from diffpy_mlsolve.radiation import resolve_radiation

__all__ = ["load_pattern"]


_START_DATA = re.compile(r"^\s*#+\s*start data", re.I)
_WAVELENGTH = re.compile(
    r"^[#!%\s]*(?:wavelength|wave[ _]length|lambda)\s*"
    r"(?:[(\[]\s*([^)\]]*)[)\]])?\s*[:=]\s*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ\u00c5]*)",
    re.I,
)
_TO_ANGSTROM = {"m": 1e10, "mm": 1e7, "um": 1e4, "µm": 1e4, "nm": 10.0}
_TO_ANGSTROM.update({"pm": 0.01, "a": 1.0, "å": 1.0, "ang": 1.0})
_PYFAI_UNIT = re.compile(r"(2th_deg|2th_rad|q_nm\^-1|q_a\^-1)", re.I)
_SIGMA_NAME = re.compile(r"sig|err|esd|std|unc|^d[iy]$", re.I)
_PDF_EXT = {".gr": "r", ".fq": "q", ".sq": "q", ".iq": "q"}
_LOAD_KWARGS = {"columns", "delimiter", "metadata"}


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_text(path: Path) -> str:
    if not path.exists():
        raise PatternFileError(
            f"Pattern file '{path}' does not exist. Please check the path "
            f"(relative paths start in {Path.cwd()})."
        )
    if path.is_dir():
        raise PatternFileError(
            f"'{path}' is a folder, not a pattern file. Please pass one "
            ".xy/.xye/.csv/.chi/.gr file inside it."
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PatternFileError(
            f"Pattern file '{path}' cannot be read ({err.strerror}). "
            "Please check its permissions."
        ) from err
    if not raw.strip():
        raise PatternFormatError(
            f"File '{path}' is empty. Please check that the export finished "
            "and pass a file with x and intensity columns."
        )
    binary = (
        f"File '{path}' is not a text file (it holds binary bytes, e.g. a "
        "detector image or an archive). Please export the pattern as text "
        "(.xy, .xye, .csv, .chi) first."
    )
    if b"\x00" in raw:
        raise PatternFormatError(binary)
    for encoding in ("utf-8-sig", "cp1252"):  # cp1252: old "°"/"Å" headers
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise PatternFormatError(binary)
    if len(re.findall(r"[\x01-\x08\x0e-\x1f\x7f]", text)) > 0.01 * len(text):
        raise PatternFormatError(binary)
    return text


def _tokens(line: str, delim: str | None) -> list[str] | None:
    text = line.split("#", 1)[0].strip()
    if not text or text[0] in "!%":
        return None
    if delim is None:
        return text.split()
    parts = [p.strip().strip("'\"") for p in text.split(delim)]
    while parts and not parts[-1]:
        parts.pop()
    if delim == ";":  # "1,5;200" with decimal commas
        parts = [p.replace(",", ".") for p in parts]
    return parts


def _sniff(lines: list[str]) -> str | None:
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text and (text[0].isdigit() or text[0] in "+-."):
            return ";" if ";" in text else ("," if "," in text else None)
    return None


def _table(text: str, path: Path, delim: str | None):
    """Header lines, column names, data (n, ncol) and the line numbers."""
    lines = text.splitlines()
    start = next(
        (i + 1 for i, ln in enumerate(lines) if _START_DATA.match(ln)), 0
    )
    head = [ln.strip() for ln in lines[:4]]
    if (
        path.suffix.lower() == ".chi"
        and start == 0
        and len(lines) > 4
        and not head[0].startswith("#")
        and head[3].isdigit()
    ):
        start = 4  # Fit2D/pyFAI: title, x label, y label, npoints
    delim = delim or _sniff(lines[start:])
    first, single = None, False
    for i in range(start, len(lines)):
        tok = _tokens(lines[i], delim)
        if tok and all(_is_number(t) for t in tok):
            if len(tok) >= 2:
                first = i
                break
            single = True
    if first is None:
        why = "only one column" if single else "no numeric data rows"
        raise PatternFormatError(
            f"File '{path}' has {why}. A pattern file needs rows of x and "
            "intensity (and optionally sigma) numbers; please check that "
            "this is the exported pattern and not only its header."
        )
    ncol = len(_tokens(lines[first], delim))
    names = None
    prev = next((j for j in range(first - 1, -1, -1) if lines[j].strip()), -1)
    if prev >= 0:
        raw = lines[prev].strip()
        body = re.sub(r"^#+\s*(L\s+)?", "", raw)
        tok = body.split(delim) if delim else body.split()
        tok = [t.strip().strip("'\"") for t in tok if t.strip()]
        if tok and not raw.startswith("#") and _is_number(tok[0]):
            if len(tok) == ncol:  # a data row with a bad token
                first = prev
        elif len(tok) >= 2 and prev >= start and not re.search("[=:]", body):
            names = tok
    rows, values = [], []
    for i in range(first, len(lines)):
        tok = _tokens(lines[i], delim)
        if not tok:
            continue
        if len(tok) != ncol:
            raise PatternFormatError(
                f"File '{path}', line {i + 1}: {len(tok)} column(s), but the "
                f"data from line {first + 1} has {ncol}. Please fix or "
                "remove that line (or comment it out with '#')."
            )
        try:
            values.append([float(t) for t in tok])
        except ValueError:
            bad = next(t for t in tok if not _is_number(t))
            raise PatternFormatError(
                f"File '{path}', line {i + 1}: {bad!r} is not a number. "
                "Please fix or remove that line (or comment it out with "
                "'#')."
            ) from None
        rows.append(i + 1)
    return lines[:first], lines[:start], names, np.array(values), rows


def _axis_from_name(name: str):
    """(xtype, factor to the Pattern's units, unit label) or None."""
    n = re.sub(r"^#+\s*", "", name.strip()).lower()
    nano = "nm" in n or "nano" in n
    if re.match(r"(2[-_ ]?th|tth|two[-_ ]?theta|angle)", n):
        return "tth", (180.0 / math.pi if "rad" in n else 1.0), name
    if re.match(r"q(?![a-z])", n):
        return "q", (0.1 if nano else 1.0), name
    if re.match(r"(d(?![a-z*])|d[-_ ]?spac)", n):
        return "d", (10.0 if nano else 1.0), name
    if re.match(r"r(?![a-z])", n) and "mm" not in n:
        return "r", 1.0, name
    return None


def _detect_axis(ext, meta, preamble, names, header):
    """(xtype, factor, unit) from the file, in order of trust, or None.

    A header ``xtype = q`` (as ``mlsolve simulate`` writes), the PDFgetX3
    extension, the Fit2D x label, the first column name, a pyFAI unit.
    """
    key = str(meta.get("xtype", "")).strip().lower()
    if _ALIASES.get(key, key) in XTYPES:
        return _ALIASES.get(key, key), 1.0, ""
    if ext in _PDF_EXT:
        return _PDF_EXT[ext], 1.0, ""
    names = (preamble[1:2] if len(preamble) == 4 else []) + (names or [])[:1]
    found = _PYFAI_UNIT.search("\n".join(header))
    for name in names + ([found.group(1)] if found else []):
        hint = _axis_from_name(name)
        if hint:
            return hint
    return None


def _header_pairs(path: Path) -> dict:
    """``key = value`` header data through diffpy.utils' load_data."""
    from diffpy.utils.parsers import load_data

    try:
        pairs = load_data(path, minrows=1, headers=True)
    except (UnicodeDecodeError, ValueError, OSError):
        return {}
    out = {}
    for key, value in pairs.items():
        key = key.lstrip("#").strip()
        if re.fullmatch(r"[A-Za-z_][\w.\-]*", key):
            out[key] = value
    return out


def _header_wavelength(header: list[str], path: Path):
    for number, line in enumerate(header, start=1):
        match = _WAVELENGTH.match(line)
        if not match:
            continue
        value = float(match.group(2))
        unit = (match.group(1) or match.group(3) or "").strip().lower()
        factor = _TO_ANGSTROM.get(unit)
        if factor is None:  # no unit: pyFAI writes metres, others Å
            factor = 1e10 if 0 < value < 1e-6 else 1.0
        try:
            return resolve_radiation(value * factor).wavelength
        except WavelengthError as err:
            raise WavelengthError(
                f"File '{path}', line {number}: the header line "
                f"{line.strip()!r} is not a usable wavelength (it must be "
                f"positive and in Å, nm or m). {_HINT} (your instrument's "
                "value) to load_pattern(); the argument overrides the header."
            ) from err
    return None


def _from_object(obj, wavelength, xtype) -> Pattern:
    """A Pattern from a diffpy.utils DiffractionObject."""
    xt = _xtype(xtype or obj.input_xtype)
    if xt == "r":
        raise PatternFormatError(
            "A DiffractionObject holds Q, 2θ or d data, not r. Please pass "
            "xtype='q', 'tth' or 'd'."
        )
    arrays = np.asarray(obj.all_arrays)  # columns: y, q, tth, d
    meta = dict(getattr(obj, "metadata", None) or {})
    for key in ("name", "scat_quantity"):
        if getattr(obj, key, ""):
            meta[key] = getattr(obj, key)
    if wavelength is None and obj.wavelength is not None:
        wavelength = obj.wavelength
        meta["wavelength_from"] = "object"
    col = {"q": 1, "tth": 2, "d": 3}[xt]
    return Pattern.from_arrays(
        arrays[:, col], arrays[:, 0], xt, wavelength, metadata=meta
    )


def load_pattern(
    path_or_object, wavelength=None, xtype: str | None = None, **kwargs
) -> Pattern:
    """Read a powder pattern or PDF from a file or a diffpy.utils object.

    Parameters
    ----------
    path_or_object : str, PathLike, Pattern or DiffractionObject
        A text file: ``.xy``, ``.xye`` (3rd column sigma), ``.dat``,
        ``.txt``, ``.csv`` (comma or semicolon, optional header of column
        names), ``.chi`` (Fit2D/pyFAI), or PDFgetX3 ``.gr`` (r in Å),
        ``.fq``/``.sq``/``.iq`` (Q in Å^-1).  Lines starting with ``#``,
        ``!`` or ``%`` are comments.
    wavelength : float, str or Radiation, optional
        Wavelength in Å or a source name ("CuKa1"); wins over the file
        header (``wavelength = 0.1665`` in Å, ``# Wavelength: 1.54e-10 m``
        as pyFAI writes it, with units m/nm/Å).
    xtype : str, optional
        "tth", "q", "d" or "r".  Default: from the extension, the column
        names or the pyFAI unit (``2th_deg``, ``q_nm^-1`` is divided by
        10 to Å^-1), else "tth".
    **kwargs
        ``columns=(ix, iy[, isigma])`` column indices (default x, y and
        sigma when the file says so), ``delimiter=``, ``metadata=`` (dict
        merged into the pattern's metadata).

    Returns
    -------
    Pattern
        metadata holds the header ``key = value`` pairs (numbers as
        float), "wavelength_from" ("argument", "header" or None) and
        "source_name" for a named source.

    Raises
    ------
    PatternFileError
        A missing file, a folder, an unreadable file.
    PatternFormatError
        Content that is not a pattern (with file, line and token).
    WavelengthError
        A wavelength that is not positive or unknown.
    """
    unknown = set(kwargs) - _LOAD_KWARGS
    if unknown:
        raise TypeError(
            f"load_pattern() got unexpected keyword arguments "
            f"{sorted(unknown)}; it takes {sorted(_LOAD_KWARGS)}."
        )
    obj = path_or_object
    if isinstance(obj, Pattern):
        if xtype is not None and _xtype(xtype) != obj.xtype:
            raise PatternFormatError(
                f"This pattern is on {obj.xtype}. Please convert it with "
                "pattern.on_q() or pattern.on_tth() instead of xtype=."
            )
        return obj if wavelength is None else obj.with_wavelength(wavelength)
    if hasattr(obj, "all_arrays") and hasattr(obj, "input_xtype"):
        return _from_object(obj, wavelength, xtype)
    if not isinstance(obj, (str, os.PathLike)):
        raise PatternFormatError(
            "load_pattern() takes a file path, a Pattern or a diffpy.utils "
            f"DiffractionObject, not {type(obj).__name__}."
        )
    path = Path(obj)
    text = _read_text(path)
    header, preamble, names, data, rows = _table(
        text, path, kwargs.get("delimiter")
    )
    ext = path.suffix.lower()
    meta = _header_pairs(path)
    meta["format"] = ext.lstrip(".") or "text"
    if names:
        meta["column_names"] = tuple(names)
    hint = _detect_axis(ext, meta, preamble, names, header)
    xt = _xtype(xtype) if xtype is not None else (hint or ("tth",))[0]
    ncol = data.shape[1]
    cols = tuple(kwargs.get("columns") or ())
    if not cols:
        sig = None
        if ncol >= 3 and (
            ext == ".xye"
            or (names and len(names) >= 3 and _SIGMA_NAME.search(names[2]))
        ):
            sig = 2
        elif ext == ".gr" and ncol >= 4:
            sig = 3  # PDFgui: r G dr dG
        cols = (0, 1) if sig is None else (0, 1, sig)
    if len(cols) not in (2, 3) or max(cols) >= ncol or min(cols) < -ncol:
        raise PatternFormatError(
            f"File '{path}': columns={cols} do not fit its {ncol} columns. "
            "Please pass columns=(x, y) or (x, y, sigma) as 0-based indices."
        )
    x = data[:, cols[0]]
    if hint and hint[0] == xt and hint[1] != 1.0:
        x = x * hint[1]
        meta["x_unit"] = hint[2]
    sigma = data[:, cols[2]] if len(cols) == 3 else None
    rows = np.asarray(rows)
    x, y, sigma, flipped = _check(
        x, data[:, cols[1]], sigma, xt, str(path), rows
    )
    if flipped:
        meta["reversed"] = True
    header_lam = (
        _header_wavelength(header, path) if wavelength is None else None
    )
    meta["wavelength_from"] = None
    if wavelength is not None:
        meta["wavelength_from"] = "argument"
    elif header_lam is not None:
        wavelength, meta["wavelength_from"] = header_lam, "header"
    meta.update(kwargs.get("metadata") or {})
    pattern = Pattern(x, y, xt, wavelength, sigma, meta, str(path))
    _check_content(pattern.intensity, xt, pattern.source)
    return pattern
