"""Structures in: displacement parameters and cells as a user gives them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffpy_mlsolve.structures import DEFAULT_BISO, as_crystal, to_diffpy

CIF = """data_NaCl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
_symmetry_Int_Tables_number 225
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
x,y+1/2,z+1/2
x+1/2,y,z+1/2
x+1/2,y+1/2,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
{uiso_tag}
Na1 Na 0 0 0 {u_na}
Cl1 Cl 0.5 0.5 0.5 {u_cl}
"""


def test_cif_displacements_are_kept(tmp_path):
    path = tmp_path / "with_u.cif"
    path.write_text(
        CIF.format(
            uiso_tag="_atom_site_U_iso_or_equiv", u_na="0.02", u_cl="0.015"
        )
    )
    c = as_crystal(path, standardize=False)
    b = dict(zip(c.numbers.tolist(), c.biso.tolist()))
    assert b[11] == pytest.approx(8 * math.pi**2 * 0.02)
    assert b[17] == pytest.approx(8 * math.pi**2 * 0.015)


def test_cif_without_displacements_gets_the_default(tmp_path):
    path = tmp_path / "no_u.cif"
    path.write_text(CIF.format(uiso_tag="", u_na="", u_cl=""))
    c = as_crystal(path, standardize=False)
    assert np.all(c.biso == DEFAULT_BISO)
    assert c.natoms == 8  # the centring translations were applied


def test_diffpy_zero_uiso_is_respected(textbook_structures):
    """A diffpy Structure states its Uiso, zero included."""
    crystal = as_crystal(textbook_structures["NaCl"], biso=0.0)
    again = as_crystal(to_diffpy(crystal), standardize=False)
    assert np.all(again.biso == 0.0)
