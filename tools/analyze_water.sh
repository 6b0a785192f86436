#!/bin/bash
# The README's water analysis, end to end: MD of the shipped water model, then every
# `dpengine analyze` subcommand on its trajectory, pictures copied to docs/analysis.
#
#   bash tools/analyze_water.sh [WORKDIR] [MODEL]      (defaults: /tmp/water_analysis,
#                                                       inputs/water/water.pt)
#
# MD: the shipped 64-H2O box (inputs/water/water.toml), compressed model, NVT at 300 K
# with stochastic velocity rescaling (tau 0.5 ps, a global thermostat that leaves the
# dynamics, hence D, essentially untouched), dt 0.5 fs, 22,000 steps (11 ps), a frame
# with velocities every 2 fs. The first 1 ps (500 frames) is left out of every analysis.
# Cost: about 15 min on a 2-core machine. Key numbers: WORKDIR/analysis/*.json.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/water_analysis}
MODEL=$(realpath "${2:-$REPO/inputs/water/water.pt}")
I=$REPO/inputs/water/water.toml
A=$W/analysis
mkdir -p "$W" "$A"
dpengine compress "$MODEL" -o "$W/water-c.pt"
if [ ! -f "$W/md/traj.nc" ]; then
  dpengine run "$I" --output-dir "$W/md" --steps 22000 \
    --set potential.model="$W/water-c.pt" --set md.ensemble=nvt --set md.thermostat=csvr \
    --set md.temperature=300 --set md.tau_t=500 --set output.trajectory_interval=4 \
    --set output.thermo_interval=20 --set output.restart_interval=2000
fi
T=$W/md/traj.nc
run() {  # run SUBCOMMAND ARGS... → $A/SUBCOMMAND_ARGS.json
  local name
  name=$1_$(echo "${@:2}" | tr -cd "A-Za-z0-9. " | tr " ." "__")
  dpengine analyze "$1" "$T" "${@:2}" --input "$I" -o "$A" -q --skip 500 --json > "$A/$name.json"
}
run rdf --types O O --bins 150
run rdf --types O H --bins 150
run rdf --types H H --bins 150
run adf --types O O O --cutoff 3.5
run steinhardt --types O --cutoff 3.5
run msd --types O --fit 1 4 --max-lag 5
run msd --types H --fit 1 4 --max-lag 5
run density
run vacf --types O --max-lag 1
run vacf --types H --max-lag 1
dpengine analyze thermo "$W/md/thermo.log" -o "$A" -q --skip 25 --columns temp pe etotal press \
  --json > "$A/thermo.json"
for f in rdf_O-O rdf_O-H adf_O-O-O steinhardt_O msd_O vacf_H thermo; do
  cp "$A/$f.png" "$REPO/docs/analysis/water_$f.png"
done
grep -h . "$A"/*.json
