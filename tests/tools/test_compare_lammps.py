"""tools/compare_lammps.py without LAMMPS: the shared data file and the log parsing."""
import numpy as np

from dpengine.structure import read_structure
from dpengine_tools.compare_lammps import (KB_EV, MASSES, MVV2E, last_dump_frame,
                                            lammps_thermo, write_data)

LOG = """LAMMPS (22 Jul 2025)
Setting up Verlet run ...
  Unit style    : metal
  Current step  : 0
   Step         PotEng         KinEng         TotEng
         0  -29943.3261393532 8.2151040182 -29935.1110353350
        10  -29942.5835639177 7.4738931553 -29935.1096707623
Loop time of 9.8 on 2 procs for 10 steps with 192 atoms
"""


def test_data_file_read_by_dpengine(tmp_path):
    """The LAMMPS data file both programs start from: dpengine reads its Masses and its
    metal-unit velocities (Å/ps → Å/fs); no net momentum; about 330 K."""
    write_data(tmp_path / "conf.lmp", 1)
    s = read_structure(tmp_path / "conf.lmp", type_map=["O", "H"])
    assert len(s.positions) == 192 and s.symbols.count("O") == 64
    np.testing.assert_allclose(np.unique(s.masses), sorted(MASSES.values()))
    momentum = (s.masses[:, None] * s.velocities).sum(0)
    assert np.abs(momentum).max() < 1e-12
    v_ps = s.velocities * 1000.0
    temperature = (s.masses[:, None] * v_ps ** 2).sum() * MVV2E / (3 * 192 * KB_EV)
    assert 280 < temperature < 380


def test_log_and_dump_parsing(tmp_path):
    thermo = lammps_thermo(LOG)
    assert thermo.shape == (2, 4) and thermo[1, 0] == 10 and thermo[0, 1] == -29943.3261393532
    (tmp_path / "d.lmp").write_text(
        "ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n1\nITEM: ATOMS id x y z vx vy vz fx fy fz\n"
        "1 0 0 0 0 0 0 0 0 0\nITEM: TIMESTEP\n10\nITEM: NUMBER OF ATOMS\n1\n"
        "ITEM: ATOMS id x y z vx vy vz fx fy fz\n1 1 2 3 4 5 6 7 8 9\n")
    np.testing.assert_array_equal(last_dump_frame(tmp_path / "d.lmp"), [[1, 2, 3, 4, 5, 6, 7, 8, 9]])
