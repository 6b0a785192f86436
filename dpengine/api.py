"""The public Python API: ``load_model`` and a model's ``evaluate``."""
import numpy as np
import torch

from dpengine.deeppot import DeepPotential


class Model:
    """A loaded Deep Potential for single-point evaluations.

    ``evaluate(positions [N,3] Å, box [3,3] Å (rows = cell vectors) or None, types [N]
    indices into ``type_map``)`` → dict of float64 numpy arrays: ``energy`` (eV),
    ``forces`` [N,3] (eV/Å), ``virial`` [3,3] (eV) and ``atom_energy`` [N] (eV).
    """

    def __init__(self, path, device: str = "cpu", precision: str = "float64"):
        from dpengine.neighbor import NeighborList

        self.potential = DeepPotential(path, device=device, precision=precision)
        self.device = self.potential.device
        self.type_map = self.potential.type_map
        self.cutoff = self.potential.cutoff
        self.metadata = self.potential.metadata
        self._nlist = NeighborList(self.cutoff, skin=0.0, device=str(self.device))

    def evaluate(self, positions, box, types) -> dict:
        positions = np.asarray(positions, dtype=np.float64)
        types = np.asarray(types)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
        if types.shape != (positions.shape[0],):
            raise ValueError(f"types must have shape [{positions.shape[0]}], got {types.shape}")
        if not np.issubdtype(types.dtype, np.integer):
            raise ValueError(f"types must be integer indices into type_map {self.type_map}")
        if len(types) and (types.min() < 0 or types.max() >= len(self.type_map)):
            raise ValueError(f"types must lie in 0..{len(self.type_map) - 1} "
                             f"(type_map {self.type_map}), got {types.min()}..{types.max()}")
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(3, 3)
            if abs(np.linalg.det(box)) < 1e-12:
                raise ValueError("box is singular (rows must be three independent cell vectors)")
        pos_t = torch.as_tensor(positions, device=self.device)
        box_t = None if box is None else torch.as_tensor(box, device=self.device)
        types_t = torch.as_tensor(types, dtype=torch.int32, device=self.device)
        self._nlist.update(pos_t, box_t, force=True)
        res = self.potential.compute(pos_t, box_t, types_t, self._nlist, atom_energy=True)
        return dict(energy=float(res.energy), forces=res.forces.cpu().numpy(),
                    virial=res.virial.cpu().numpy(), atom_energy=res.atom_energy.cpu().numpy())


def load_model(path, device: str = "cpu", precision: str = "float64") -> Model:
    """Load a dpengine model file (``dpengine import-deepmd`` or ``dpengine freeze`` output)."""
    return Model(path, device=device, precision=precision)
