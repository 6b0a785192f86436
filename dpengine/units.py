"""Unit constants of the engine.

Engine units: length Å, energy eV, mass amu (g/mol), time fs, temperature K,
pressure bar. Velocities are stored in Å/fs, forces in eV/Å.

Newton's law in these units: a [Å/fs²] = F [eV/Å] / m [amu] · EV_PER_AMU_A2_FS2⁻¹ … written
as ``a = ACCEL * F / m`` with ``ACCEL = 1 eV/(Å·amu)`` expressed in Å/fs².
"""

#: Boltzmann constant, eV/K (CODATA 2018, exact SI definitions).
KB = 8.617333262e-5
#: 1 eV / (Å · amu) in Å/fs²: (1.602176634e-19 J) / (1.66053906660e-27 kg) · 1e20 Å²/m² · 1e-30 s²/fs².
ACCEL = 1.602176634e-19 / 1.66053906660e-27 * 1e-10
#: Kinetic energy ½ m v² with m in amu and v in Å/fs, in eV.
KE_TO_EV = 1.0 / ACCEL
#: 1 eV/Å³ in bar (1.602176634e-19 J / 1e-30 m³ = 1.602176634e11 Pa; 1 bar = 1e5 Pa).
EV_PER_A3_TO_BAR = 1.602176634e6
#: 1 eV in kcal/mol (AMBER's energy unit): 1.602176634e-19 J · 6.02214076e23 / 4184 J/kcal.
EV_TO_KCAL_MOL = 1.602176634e-19 * 6.02214076e23 / 4184.0
#: Å/fs → Å/ps.
A_PER_FS_TO_A_PER_PS = 1000.0
#: fs → ps.
FS_TO_PS = 1e-3
