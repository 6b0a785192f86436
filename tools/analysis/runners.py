"""The analyses behind ``dpengine analyze``: arguments in, table + plot + key numbers out.

Every ``run_<analysis>(args)`` returns a JSON-ready dict of the key numbers, the paths it
wrote (``table``, ``plot``) and a ``summary`` (lines for the terminal). Errors are
``ValueError``/``FileNotFoundError`` with one line naming the file, type or value.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import atomtypes
from .trajectory import Trajectory

__all__ = [f"run_{name}" for name in ("rdf", "adf", "steinhardt", "msd", "density", "vacf",
                                      "thermo")]


class _Context:
    """The opened trajectory, the selected frames and the atom names of one analysis."""

    def __init__(self, args, need_types: bool):
        self.args = args
        self.traj = Trajectory(args.trajectory)
        self.frames = self.traj.select(args.skip, args.stride, args.stop)
        self.source = args.input or args.types_file or "the type source"
        self.symbols = atomtypes.resolve_symbols(
            self.traj.n_atoms, args.input, args.types_file, args.type_map, required=need_types,
            trajectory=self.traj.path)
        self.out = Path(args.output_dir)

    def atoms(self, name: str) -> np.ndarray:
        if name == "all" and self.symbols is None:
            return np.arange(self.traj.n_atoms)
        return atomtypes.select(self.symbols, name, self.source)

    def path(self, stem: str, ext: str) -> Path:
        return self.out / f"{self.args.prefix}{stem}.{ext}"

    def header(self, what: str) -> list[str]:
        f = self.frames
        return [what, f"trajectory: {self.traj.path} ({self.traj.n_atoms} atoms, written by "
                f"{self.traj.program})",
                f"frames: {len(f)} ({f[0]}..{f[-1]} step {self.args.stride})"]

    def base(self, analysis: str, **numbers) -> dict:
        return dict(analysis=analysis, trajectory=self.traj.path, frames=len(self.frames),
                    **numbers)

    def plot(self, draw, stem: str) -> Path | None:
        """Save the figure ``draw()`` builds as ``<prefix><stem>.png``, unless --no-plot."""
        return None if self.args.no_plot else draw().save(self.path(stem, "png"))


def _fmt(x, spec=".3f"):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def run_rdf(args) -> dict:
    from .output import Figure, write_table
    from .pairs import rdf

    ctx = _Context(args, need_types=True)
    a, b = args.types
    sel_a, sel_b = ctx.atoms(a), ctx.atoms(b)
    res = rdf(ctx.traj, ctx.frames, sel_a, sel_b, args.rmax, args.bins, args.method,
              not args.quiet)
    stem = f"rdf_{a}-{b}"
    table = write_table(ctx.path(stem, "csv"), ["r[A]", f"g_{a}{b}(r)[-]", f"n_{a}{b}(r)[-]"],
                        [res.r, res.g, res.coordination], ctx.header(
                            f"radial distribution function {a}-{b}: r bin centre (Å), g(r), "
                            f"mean number of {b} within r of a {a}") +
                        [f"bins {args.bins} on [0, {res.edges[-1]:.6g}] Å; {b} number density "
                         f"{res.density_b:.6g} 1/Å³; method {res.method}"])
    pk = res.peak

    def draw():
        fig = Figure(title=f"{a}–{b} radial distribution ({res.n_frames} frames)")
        ax = fig.ax()
        ax.plot(res.r, res.g, color="C0", label=f"g$_{{{a}{b}}}$(r)")
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.set_xlim(0, res.edges[-1])
        if pk["r_peak"] is not None:
            ax.plot([pk["r_peak"]], [pk["g_peak"]], "o", color="C3",
                    label=f"peak {pk['r_peak']:.2f} Å, {pk['g_peak']:.2f}")
        if pk["r_min"] is not None:
            ax.axvline(pk["r_min"], color="C2", lw=0.8, ls="--",
                       label=f"min {pk['r_min']:.2f} Å, n = {pk['coordination']:.2f}")
        ax2 = ax.twinx()
        ax2.plot(res.r, res.coordination, color="C1", lw=1.0, label="n(r)")
        ax2.set_ylabel(f"n(r) (number of {b})")
        ax2.set_ylim(0, max(1.0, float(res.coordination[-1])) * 1.05)
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(lines, [ln.get_label() for ln in lines], loc="best", fontsize=8)
        return fig

    plot = ctx.plot(draw, stem)
    out = ctx.base("rdf", types=[a, b], n_a=res.n_a, n_b=res.n_b, rmax=float(res.edges[-1]),
                   bins=args.bins, method=res.method, density_b=res.density_b,
                   first_peak_r=pk["r_peak"], first_peak_g=pk["g_peak"], first_min_r=pk["r_min"],
                   first_min_g=pk["g_min"], coordination_number=pk["coordination"],
                   table=table, plot=plot)
    out["summary"] = [
        f"{a}-{b} RDF of {res.n_frames} frames ({res.n_a} x {res.n_b} atoms, r_max "
        f"{res.edges[-1]:.3f} Å): first peak {_fmt(pk['r_peak'])} Å, g = {_fmt(pk['g_peak'])}; "
        f"first minimum {_fmt(pk['r_min'])} Å; coordination number "
        f"{_fmt(pk['coordination'], '.2f')}",
        f"wrote {table}" + (f", {plot}" if plot else "")]
    return out


def run_adf(args) -> dict:
    from .output import Figure, write_table
    from .pairs import adf

    ctx = _Context(args, need_types=True)
    j, i, k = args.types
    res = adf(ctx.traj, ctx.frames, ctx.atoms(i), ctx.atoms(j), ctx.atoms(k), args.cutoff,
              args.bins, not args.quiet)
    stem = f"adf_{j}-{i}-{k}"
    table = write_table(ctx.path(stem, "csv"), ["theta[deg]", "P(theta)[1/deg]", "count[-]"],
                        [res.theta, res.p, res.counts], ctx.header(
                            f"bond-angle distribution {j}-{i}-{k} (centre {i}), both legs < "
                            f"{args.cutoff:g} Å; P normalised to 1 over 0-180 degree") +
                        [f"triplets per centre and frame: {res.triplets_per_centre:.6g}"])
    peak = float(res.theta[int(np.argmax(res.p))]) if res.counts.sum() else None
    mean = float((res.theta * res.counts).sum() / res.counts.sum()) if res.counts.sum() else None

    def draw():
        fig = Figure(title=f"{j}–{i}–{k} angle distribution, r < {args.cutoff:g} Å "
                           f"({res.n_frames} frames)")
        ax = fig.ax()
        ax.plot(res.theta, res.p, color="C0")
        ax.axvline(109.47, color="0.6", lw=0.8, ls=":", label="tetrahedral 109.5°")
        ax.set_xlabel(f"angle {j}–{i}–{k} θ (degree)")
        ax.set_ylabel("P(θ) (1/degree)")
        ax.set_xlim(0, 180)
        ax.legend(fontsize=8)
        return fig

    plot = ctx.plot(draw, stem)
    out = ctx.base("adf", types=[j, i, k], cutoff=args.cutoff, peak_deg=peak, mean_deg=mean,
                   triplets_per_centre=res.triplets_per_centre, table=table, plot=plot)
    out["summary"] = [f"{j}-{i}-{k} ADF of {res.n_frames} frames (legs < {args.cutoff:g} Å): "
                      f"peak {_fmt(peak, '.1f')}°, mean {_fmt(mean, '.1f')}°, "
                      f"{res.triplets_per_centre:.3f} triplets per centre",
                      f"wrote {table}" + (f", {plot}" if plot else "")]
    return out


def run_steinhardt(args) -> dict:
    from .output import Figure, write_table
    from .steinhardt import steinhardt

    ctx = _Context(args, need_types=args.types[0] != "all")
    name = args.types[0]
    res = steinhardt(ctx.traj, ctx.frames, ctx.atoms(name), args.cutoff, args.degrees,
                     args.bins, not args.quiet)
    centres = 0.5 * (res.edges[1:] + res.edges[:-1])
    cols, data = ["Q[-]"], [centres]
    for l in res.degrees:
        cols += [f"P(Q{l})[-]", f"P(Q{l}bar)[-]"]
        data += [res.q[l], res.qbar[l]]
    stem = f"steinhardt_{name}"
    table = write_table(ctx.path(stem, "csv"), cols, data, ctx.header(
        f"per-atom Steinhardt Q_l and Lechner-Dellago Q_l-bar of {name}, neighbours within "
        f"{args.cutoff:g} Å; probability densities on [0, 1]") +
        [f"mean neighbours {res.neighbours:.4g}; atom-frames without neighbours {res.isolated}"])

    def draw():
        fig = Figure(1, 2, width=5.0, title=f"{name}: bond-orientational order, r < "
                     f"{args.cutoff:g} Å ({res.n_frames} frames)")
        for k, (dist, sym) in enumerate(((res.q, "Q"), (res.qbar, r"\bar{Q}"))):
            ax = fig.ax(k)
            for l in res.degrees:
                ax.plot(centres, dist[l], label=f"${sym}_{{{l}}}$")
            ax.set_xlabel(f"${sym}_l$ (dimensionless)")
            ax.set_ylabel("probability density")
            ax.set_xlim(0, 1)
            ax.legend(fontsize=8)
        return fig

    plot = ctx.plot(draw, stem)
    out = ctx.base("steinhardt", types=[name], cutoff=args.cutoff, neighbours=res.neighbours,
                   isolated=res.isolated, table=table, plot=plot)
    for l in res.degrees:
        out.update({f"Q{l}_mean": res.mean[l], f"Q{l}_std": res.std[l],
                    f"Q{l}bar_mean": res.mean_bar[l], f"Q{l}bar_std": res.std_bar[l]})
    out["summary"] = [f"{name}: " + ", ".join(
        f"Q{l} = {res.mean[l]:.4f} ± {res.std[l]:.4f}, Q{l}bar = {res.mean_bar[l]:.4f} ± "
        f"{res.std_bar[l]:.4f}" for l in res.degrees) + f" (mean ± std over atoms; "
        f"{res.neighbours:.2f} neighbours)", f"wrote {table}" + (f", {plot}" if plot else "")]
    return out


def run_msd(args) -> dict:
    from .dynamics import A2_PER_PS_TO_CM2_PER_S, msd
    from .output import Figure, write_table

    name = args.types[0]
    ctx = _Context(args, need_types=name != "all")
    masses = None
    if ctx.symbols is not None:
        from dpengine.structure import masses_for
        masses = masses_for(ctx.symbols)
    res = msd(ctx.traj, ctx.frames, ctx.atoms(name), masses, args.fit, args.max_lag,
              args.blocks, args.origins, not args.no_drift_correction, not args.quiet)
    stem = f"msd_{name}"
    cm = 1e5 * A2_PER_PS_TO_CM2_PER_S            # Å²/ps → 10⁻⁵ cm²/s
    drift = "drift kept" if args.no_drift_correction else "centre-of-mass drift removed"
    table = write_table(ctx.path(stem, "csv"), ["t[ps]", "msd[A^2]"], [res.t, res.msd],
                        ctx.header(f"mean-squared displacement of {name} (unwrapped, {drift})") +
                        [f"D = {res.D:.6g} +- {res.D_err:.3g} A^2/ps from MSD = 6 D t + b on "
                         f"{res.fit[0]:.4g}-{res.fit[1]:.4g} ps ({len(res.block_d)} segments)"])

    def draw():
        fig = Figure(1, 2, width=5.0, title=f"{name}: MSD, D = {res.D * cm:.3g} ± "
                     f"{res.D_err * cm:.2g} × 10⁻⁵ cm²/s")
        sel = (res.t >= res.fit[0]) & (res.t <= res.fit[1])
        for k, log in enumerate((False, True)):
            ax = fig.ax(k)
            ax.plot(res.t[1:] if log else res.t, res.msd[1:] if log else res.msd, label="MSD")
            if log:   # slope 1 (diffusive) through the fit; the measured exponent in the legend
                ax.plot(res.t[1:], 6 * res.D * res.t[1:], ":", color="C3",
                        label=f"6Dt (slope 1); fit window α = {res.alpha:.2f}")
                ax.set_xscale("log")
                ax.set_yscale("log")
            else:
                ax.plot(res.t[sel], 6 * res.D * res.t[sel] + res.intercept, "--", color="C3",
                        label="fit 6Dt + b")
            ax.axvspan(*res.fit, color="C3", alpha=0.08)
            ax.set_xlabel("lag time t (ps)")
            ax.set_ylabel("MSD (Å²)")
            ax.legend(fontsize=8)
        return fig

    plot = ctx.plot(draw, stem)
    out = ctx.base("msd", types=[name], n_atoms=res.n_atoms, dt_ps=res.dt, fit_ps=list(res.fit),
                   D_A2_per_ps=res.D, D_err_A2_per_ps=res.D_err, D_1e5_cm2_per_s=res.D * cm,
                   D_err_1e5_cm2_per_s=res.D_err * cm, alpha=res.alpha, segments_D=res.block_d,
                   notes=res.notes, table=table, plot=plot)
    out["summary"] = [f"{name}: D = {res.D:.4g} ± {_fmt(res.D_err, '.2g')} Å²/ps = "
                      f"{res.D * cm:.3g} ± "
                      f"{_fmt(res.D_err * cm, '.2g')} × 10⁻⁵ cm²/s (fit {res.fit[0]:.3g}-"
                      f"{res.fit[1]:.3g} ps, exponent α = {res.alpha:.2f})",
                      *res.notes, f"wrote {table}" + (f", {plot}" if plot else "")]
    return out


def run_density(args) -> dict:
    from dpengine.structure import masses_for

    from .output import Figure, write_table
    from .scalars import density

    ctx = _Context(args, need_types=True)
    res = density(ctx.traj, ctx.frames, masses_for(ctx.symbols), args.blocks, not args.quiet)
    table = write_table(ctx.path("density", "csv"), ["time[ps]", "volume[A^3]",
                                                     "density[g/cm^3]"],
                        [res.time, res.volume, res.density],
                        ctx.header(f"mass density, total mass {res.mass:.6g} amu"))

    def draw():
        fig = Figure(title=f"density: {res.mean:.4f} ± {_fmt(res.sem, '.2g')} g/cm³")
        ax = fig.ax()
        ax.plot(res.time, res.density)
        ax.axhline(res.mean, color="C3", ls="--", lw=0.8, label="mean")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("density (g/cm³)")
        ax.legend(fontsize=8)
        return fig

    plot = ctx.plot(draw, "density")
    out = ctx.base("density", mass_amu=res.mass, density_mean=res.mean, density_std=res.std,
                   density_sem=res.sem, table=table, plot=plot)
    out["summary"] = [f"density {res.mean:.5f} ± {_fmt(res.sem, '.2g')} g/cm³ (std "
                      f"{res.std:.2g}) over {len(res.time)} frames",
                      f"wrote {table}" + (f", {plot}" if plot else "")]
    return out


def run_vacf(args) -> dict:
    from .dynamics import THZ_TO_CM1, vacf
    from .output import Figure, write_table

    name = args.types[0]
    ctx = _Context(args, need_types=name != "all")
    res = vacf(ctx.traj, ctx.frames, ctx.atoms(name), args.max_lag, args.origins,
               not args.quiet)
    stem = f"vacf_{name}"
    c0 = res.c[0] if res.c[0] > 0 else 1.0
    table = write_table(ctx.path(stem, "csv"), ["t[ps]", "C[A^2/ps^2]", "C/C0[-]"],
                        [res.t, res.c, res.c / c0],
                        ctx.header(f"velocity autocorrelation of {name}"))
    spectrum = write_table(ctx.path(f"{stem}_spectrum", "csv"),
                           ["nu[THz]", "wavenumber[1/cm]", "S[A^2/ps]"],
                           [res.freq, res.freq * THZ_TO_CM1, res.spectrum],
                           ctx.header(f"power spectrum of the velocity autocorrelation of {name}"
                                      " (Hann window); S(0) = 6 D"))

    def draw():
        fig = Figure(1, 2, width=5.0,
                     title=f"{name}: velocity autocorrelation ({res.n_frames} frames)")
        ax = fig.ax(0)
        ax.plot(res.t, res.c / c0)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel("t (ps)")
        ax.set_ylabel("C(t) / C(0)")
        ax = fig.ax(1)
        ax.plot(res.freq * THZ_TO_CM1, res.spectrum)
        cum = np.cumsum(np.abs(res.spectrum))         # show the band holding 99.9 % of |S|
        top = res.freq[min(int(np.searchsorted(cum, 0.999 * cum[-1])), len(cum) - 1)] * THZ_TO_CM1
        ax.set_xlim(0, min(res.freq[-1] * THZ_TO_CM1, max(500.0, 1.2 * top)))
        ax.set_xlabel("wavenumber (cm⁻¹)")
        ax.set_ylabel("S(ν) (Å²/ps)")
        return fig

    plot = ctx.plot(draw, stem)
    nyquist = 0.5 / res.dt * THZ_TO_CM1
    out = ctx.base("vacf", types=[name], dt_ps=res.dt, c0_A2_per_ps2=float(res.c[0]),
                   D_green_kubo_A2_per_ps=res.D_gk, nyquist_cm1=nyquist, table=table,
                   spectrum_table=spectrum, plot=plot)
    out["summary"] = [f"{name}: <v²> = {res.c[0]:.4g} Å²/ps², Green-Kubo D = {res.D_gk:.4g} "
                      f"Å²/ps (lags to {res.t[-1]:.3g} ps); spectrum to {nyquist:.0f} cm⁻¹",
                      f"wrote {table}, {spectrum}" + (f", {plot}" if plot else "")]
    return out


def run_thermo(args) -> dict:
    from .output import Figure, write_table
    from .scalars import read_thermo_log, summarize

    names, units, data = read_thermo_log(args.log)
    rows = np.arange(args.skip, len(data) if args.stop is None else min(args.stop, len(data)),
                     args.stride) if args.skip >= 0 and args.stride >= 1 else None
    if rows is None or rows.size == 0:
        raise ValueError(f"{args.log}: --skip {args.skip} --stride {args.stride} leaves no rows "
                         f"(the log has {len(data)})")
    data = data[rows]
    xcol = names.index("time") if "time" in names else 0
    wanted = args.columns or [n for k, n in enumerate(names) if k != xcol and n != "step"]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"{args.log}: no column {missing[0]!r} (columns: {', '.join(names)})")
    idx = [names.index(n) for n in wanted]
    stats = summarize(data[:, idx], args.blocks)
    out_dir = Path(args.output_dir)
    table = write_table(out_dir / f"{args.prefix}thermo_summary.csv",
                        ["column", "unit", "mean", "std", "sem", "min", "max"],
                        [[names[c] for c in idx], [units[c] for c in idx]] +
                        [[s[k] for s in stats] for k in ("mean", "std", "sem", "min", "max")],
                        [f"averages of {args.log} over {len(rows)} rows (skip {args.skip}); sem: "
                         f"standard error from {args.blocks} block means"])
    plot = None
    if not args.no_plot:
        cols = 2 if len(idx) > 1 else 1
        fig = Figure(-(-len(idx) // cols), cols, width=5.0, height=3.0,
                     title=f"{Path(args.log).name}")
        for k, c in enumerate(idx):
            ax = fig.ax(k)
            ax.plot(data[:, xcol], data[:, c], lw=0.8)
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
            ax.set_xlabel(f"{names[xcol]} ({units[xcol] or '-'})")
            ax.set_ylabel(f"{names[c]} ({units[c] or '-'})")
        plot = fig.save(out_dir / f"{args.prefix}thermo.png")
    result = dict(analysis="thermo", log=str(args.log), rows=len(rows),
                  columns={names[c]: dict(unit=units[c], **s) for c, s in zip(idx, stats)},
                  table=table, plot=plot)
    result["summary"] = [f"{names[c]:>12s} = {s['mean']:.6g} ± {_fmt(s['sem'], '.2g')} "
                         f"(std {s['std']:.3g}) {units[c]}" for c, s in zip(idx, stats)] + \
        [f"wrote {table}" + (f", {plot}" if plot else "")]
    return result
