"""An ASE calculator on top of ``dpengine.load_model``."""
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from dpengine.api import load_model


class DPCalculator(Calculator):
    """ASE calculator for a dpengine model: energy, free_energy, energies, forces, stress.

    Stress (eV/Å³, ASE's sign convention) is −W/V with W the virial.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model_path, device: str = "cpu", precision: str = "float64", **kwargs):
        super().__init__(**kwargs)
        self.model = load_model(model_path, device=device, precision=precision)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        symbols = self.atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(self.model.type_map))
        if unknown:
            raise ValueError(f"elements {unknown} are not in the model's type map "
                             f"{self.model.type_map}")
        types = np.array([self.model.type_map.index(s) for s in symbols])
        pbc = self.atoms.pbc
        if pbc.any() and not pbc.all():
            raise ValueError("partially periodic cells are not supported")
        box = np.array(self.atoms.cell) if pbc.all() else None
        out = self.model.evaluate(self.atoms.positions, box, types)
        self.results["energy"] = self.results["free_energy"] = out["energy"]
        self.results["energies"] = out["atom_energy"]
        self.results["forces"] = out["forces"]
        if box is not None:
            w = -out["virial"] / self.atoms.get_volume()
            self.results["stress"] = np.array([w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1]])
