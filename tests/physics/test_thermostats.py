"""NVT integrators sample the canonical distribution: kinetic-energy histograms against the
Gamma distribution, the Einstein crystal's potential energy against theory, and the
conserved quantities of the extended systems.

System: 256 Lennard-Jones argon atoms (fcc start, melts) at T* = 2.0 (239.6 K), ρ* = 0.8,
r_c = 2.5σ shifted, dt = 5 fs (0.0023 τ). The fast versions run a few thousand steps; the
``slow`` ones ten times more.

Statistical tests and their tolerances. The kinetic energy K of N_f degrees of freedom in
the canonical ensemble is Gamma(N_f/2, k_BT) distributed. Successive samples are correlated,
so the samples are thinned by ⌈2τ_int⌉ (τ_int: integrated autocorrelation time) into an
approximately independent set, and a Kolmogorov–Smirnov test against the exact Gamma CDF must
give p > 10⁻³: for a correct sampler p is uniform on [0, 1], so a correct thermostat fails
with probability 0.1% over seeds (the seeds are fixed, so the outcome is deterministic).
The same test rejects Berendsen's thermostat, which suppresses the fluctuations (variance
0.21 of the canonical one), with p = 9·10⁻⁵ from 80 thinned samples of an 800-step run
(``test_berendsen_is_not_canonical``) — the test has power. The variance of K must match N_f (k_BT)²/2 within 4 standard errors (autocorrelation-
corrected), and ⟨K⟩ within 4 standard errors (autocorrelation-corrected). The time-step
bias of velocity Verlet at 0.0023 τ is O(10⁻⁴) in ⟨K⟩, far below these resolutions.
"""

import numpy as np
import pytest
from scipy import stats

from dpengine import units

import md_helpers as h

T_STAR, RHO = 2.0, 0.8
TEMP = h.temperature_K(T_STAR)
KT = units.KB * TEMP
DT = 5.0
METHODS = {
    "langevin": dict(temperature=TEMP, friction=10.0),
    "csvr": dict(temperature=TEMP, tau=100.0),
    "nose-hoover-chain": dict(temperature=TEMP, tau=100.0, chain_length=3, chain_steps=1,
                              yoshida_order=3),
}


def nvt_run(name, steps, equilibrate=200, seed=3, **over):
    pos, box = h.fcc_at_density(4, RHO)
    state = h.make_state(pos, box, TEMP, seed=seed)
    integ = h.integrator(name, DT, **{**METHODS.get(name, {}), **over})
    rec = h.run(integ, state, h.lj_forcefield(2.5, "shift"), steps, equilibrate=equilibrate)
    return rec, integ, state


def check_kinetic_distribution(rec, integ, state, report):
    dof = integ.dof(state)
    ke = rec["ke"]
    gamma = stats.gamma(a=0.5 * dof, scale=KT)
    sub = h.thin(ke)
    ks = stats.kstest(sub, gamma.cdf)
    mean, mean_err = h.mean_error(ke)
    var, var_err = h.variance_error(ke)
    report.update(n_samples=len(ke), n_independent=len(sub), ks_stat=ks.statistic,
                  ks_p=ks.pvalue, mean_ratio=mean / gamma.mean(), var_ratio=var / gamma.var(),
                  var_ratio_err=var_err / gamma.var())
    assert ks.pvalue > 1e-3, report
    assert abs(mean - gamma.mean()) < 4 * mean_err, report
    assert abs(var - gamma.var()) < 4 * var_err, report
    return sub, gamma


@pytest.fixture(scope="module")
def nvt_runs():
    return {name: nvt_run(name, 1600) for name in METHODS}


@pytest.mark.parametrize("name", list(METHODS))
def test_kinetic_energy_is_gamma_distributed(nvt_runs, name):
    rec, integ, state = nvt_runs[name]
    assert integ.dof(state) == (3 * 256 if name == "langevin" else 3 * 256 - 3)
    report = {}
    check_kinetic_distribution(rec, integ, state, report)
    print(name, report)


@pytest.mark.parametrize("name", list(METHODS))
def test_conserved_quantity_does_not_drift(nvt_runs, name):
    """Nosé–Hoover chains: the extended energy; Langevin and CSVR: the effective energy
    (total energy + heat given to the bath). Measured at dt = 5 fs over 8 ps: NHC −1.4e-7,
    CSVR −1.9e-7, Langevin −1.1e-6 eV/atom/ps, fluctuations 1–3e-6 eV/atom. BAOAB's
    effective energy drifts systematically by its "shadow work" (Sivak, Chodera & Crooks,
    PRX 4, 011013 (2014)), hence its looser bound."""
    rec, integ, state = nvt_runs[name]
    drift = h.drift_per_atom_ps(rec["time"], rec["inv"], state.n_atoms)
    spread = float(np.std(rec["inv"])) / state.n_atoms
    print(name, f"drift {drift:.3e} eV/atom/ps, spread {spread:.3e} eV/atom")
    assert abs(drift) < (5e-6 if name == "langevin" else 1e-6)
    assert spread < 2e-5


def test_berendsen_is_not_canonical():
    """Negative control: the same test rejects Berendsen's weak coupling."""
    rec, integ, state = nvt_run("berendsen", 800, temperature=TEMP, tau=100.0)
    ke = rec["ke"]
    gamma = stats.gamma(a=0.5 * integ.dof(state), scale=KT)
    assert stats.kstest(h.thin(ke), gamma.cdf).pvalue < 1e-3
    var, _ = h.variance_error(ke)
    assert var / gamma.var() < 0.5
    assert abs(ke.mean() / gamma.mean() - 1) < 0.02   # the mean is right, the spread is not


def einstein_run(steps, seed=11):
    """256 atoms on fcc sites, springs only (k = 0.5 eV/Å², period 566 fs), Langevin."""
    pos, box = h.fcc_at_density(4, 1.0)
    state = h.make_state(pos, box, 300.0, seed=seed)
    ff = h.springs_forcefield(pos, box, 0.5)
    integ = h.integrator("langevin", DT, temperature=300.0, friction=5.0)
    return h.run(integ, state, ff, steps, equilibrate=200), integ, state


def check_einstein(rec, state):
    """⟨U⟩ = (3N/2) k_BT and Var(U) = (3N/2)(k_BT)², exactly (BAOAB samples harmonic
    configurations without time-step bias, Leimkuhler & Matthews 2013). Tolerance: 4
    standard errors of the mean (autocorrelation-corrected) and of the variance (autocorrelation-corrected)."""
    kt = units.KB * 300.0
    n3 = 3 * state.n_atoms
    u = rec["pe"]
    mean, err = h.mean_error(u)
    var, verr = h.variance_error(u)
    report = dict(mean_ratio=mean / (0.5 * n3 * kt), mean_err=err / (0.5 * n3 * kt),
                  var_ratio=var / (0.5 * n3 * kt * kt), var_err=verr / (0.5 * n3 * kt * kt))
    print("einstein", report)
    assert abs(mean - 0.5 * n3 * kt) < 4 * err, report
    assert abs(var - 0.5 * n3 * kt * kt) < 4 * verr, report
    return report


def test_einstein_crystal_energy_and_fluctuations():
    rec, integ, state = einstein_run(2000)
    assert integ.dof(state) == 3 * 256
    check_einstein(rec, state)


# --------------------------------------------------------------------------- slow versions
@pytest.mark.slow
@pytest.mark.parametrize("name", list(METHODS))
def test_kinetic_energy_distribution_long(name):
    """20 000 steps (100 ps): KS as above plus a χ² test of the histogram in 20 bins of
    equal Gamma probability (p > 10⁻³ with the same argument)."""
    rec, integ, state = nvt_run(name, 20000, seed=17)
    report = {}
    sub, gamma = check_kinetic_distribution(rec, integ, state, report)
    edges = gamma.ppf(np.linspace(0, 1, 21))
    counts, _ = np.histogram(sub, edges)
    chi2 = stats.chisquare(counts)
    report["chi2_p"] = chi2.pvalue
    drift = h.drift_per_atom_ps(rec["time"], rec["inv"], state.n_atoms)
    report["drift_eV_atom_ps"] = drift
    print(name, report)
    assert chi2.pvalue > 1e-3, report
    assert abs(drift) < (5e-6 if name == "langevin" else 1e-6)


@pytest.mark.slow
def test_einstein_crystal_long():
    rec, _, state = einstein_run(30000, seed=23)
    report = check_einstein(rec, state)
    assert abs(report["mean_ratio"] - 1) < 0.005
