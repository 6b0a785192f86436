"""Integrator half steps (velocity Verlet family).

Units: positions Å, velocities Å/fs, forces eV/Å, masses amu, dt fs;
``accel`` = 1 eV/(Å·amu) in Å/fs² (dpengine.units.ACCEL).
"""
import taichi as ti


@ti.kernel
def kick_drift(positions: ti.types.ndarray(ndim=2), velocities: ti.types.ndarray(ndim=2),
               forces: ti.types.ndarray(ndim=2), masses: ti.types.ndarray(ndim=1),
               dt: ti.f64, accel: ti.f64):
    """v ← v + (dt/2)·F/m;  x ← x + dt·v   (the first half of velocity Verlet)."""
    for i, a in positions:
        v = velocities[i, a] + 0.5 * dt * accel * forces[i, a] / masses[i]
        velocities[i, a] = v
        positions[i, a] += dt * v


@ti.kernel
def kick(velocities: ti.types.ndarray(ndim=2), forces: ti.types.ndarray(ndim=2),
         masses: ti.types.ndarray(ndim=1), dt: ti.f64, accel: ti.f64):
    """v ← v + (dt/2)·F/m   (the second half of velocity Verlet)."""
    for i, a in velocities:
        velocities[i, a] += 0.5 * dt * accel * forces[i, a] / masses[i]
