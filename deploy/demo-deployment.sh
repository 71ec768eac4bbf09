#!/usr/bin/env bash
# A whole deployment on one machine, as an operator would run it for real:
# provision 3 sites, start a SuperLink (TLS, node authentication) and 3
# SuperNodes as separate processes on loopback, enrol the nodes, run a small
# study with `fedsynth-coordinator study`, and leave synthetic.csv, manifest.json and the report in
# OUTDIR. Everything else it creates (kits, logs, FLWR_HOME folders, the
# SuperLink's database, the simulated hospitals' records) stays in OUTDIR/work.
# The study is the default one (pyproject.toml: the marginals family) under SecAgg+
# over all 3 sites, as `fedsynth-coordinator simulate` runs 3 sites;
# --no-secure-aggregation leaves SecAgg+ out (as a 2-site consortium should: there
# it protects nothing against the other site), --generator vae trains the VAE
# instead, --rounds N sets its rounds (the marginals family always takes 2).
# Every process it starts runs in its own process group and is ended on exit,
# whether the study succeeded, failed or was interrupted, and with Flower's runtime
# dependency installation off: nothing is downloaded while the demo runs. (On one
# machine and one account the SuperLink starts the ServerApp itself; deploy/systemd
# and deploy/compose.yaml run it apart, so that only it holds the signing key.)
#
#   deploy/demo-deployment.sh [--[no-]secure-aggregation] [--generator NAME] [--rounds N] OUTDIR
set -euo pipefail

readonly SITES=(siteA siteB siteC)
readonly CONNECTION=fedsynth-demo
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly USAGE="usage: deploy/demo-deployment.sh [--[no-]secure-aggregation] [--generator NAME] [--rounds N] OUTDIR"
readonly WAIT_S=60     # bound on each wait for a process to come up
readonly STUDY_S=600   # bound on the study itself

export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 PYTHONUNBUFFERED=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

rounds=""     # empty: the generator's own, from pyproject.toml
generator=""  # empty: pyproject.toml's
secure=true
outdir=""
while (($#)); do
  case "$1" in
    --secure-aggregation) secure=true; shift ;;
    --no-secure-aggregation) secure=false; shift ;;
    --generator)
      [[ $# -ge 2 && $2 =~ ^[a-z]+$ ]] || { echo "$USAGE (--generator takes a family's name)" >&2; exit 2; }
      generator=$2; shift 2 ;;
    --rounds)
      [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || { echo "$USAGE (--rounds takes a whole number)" >&2; exit 2; }
      rounds=$2; shift 2 ;;
    -h|--help) echo "$USAGE"; exit 0 ;;
    -*) echo "$USAGE (unknown option $1)" >&2; exit 2 ;;
    *) [[ -z $outdir ]] || { echo "$USAGE (one OUTDIR only)" >&2; exit 2; }
       outdir=$1; shift ;;
  esac
done
[[ -n $outdir ]] || { echo "$USAGE" >&2; exit 2; }

fail() {  # fail MESSAGE [LOG]: one clear message, then the end of the log that explains it
  echo "demo-deployment: $1" >&2
  if [[ $# -ge 2 && -s $2 ]]; then
    echo "--- last lines of $2 ---" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}

for tool in fedsynth-coordinator fedsynth-node flower-superlink flwr; do
  command -v "$tool" >/dev/null ||
    fail "'$tool' is not on PATH; install fedsynth first: pip install -e '$REPO'"
done
# The Python that came with the entry points (it has fedsynth's packages).
python="$(dirname "$(command -v fedsynth-coordinator)")/python"
[[ -x $python ]] || python=$(command -v python3)

if [[ -e $outdir && ! -d $outdir ]]; then
  fail "$outdir exists and is not a folder."
fi
# Only an earlier demo's folder (its work/logs is this script's mark) is reused.
if [[ -d $outdir && -n "$(ls -A "$outdir")" && ! -d $outdir/work/logs ]]; then
  fail "$outdir is not empty and holds no earlier demo (no work/logs); choose a new folder."
fi
mkdir -p "$outdir" || fail "cannot create $outdir."
outdir="$(cd "$outdir" && pwd)"
work=$outdir/work
study=$outdir/study
# An earlier demo's outputs and state would otherwise pass for this run's (or be resumed).
rm -rf "$work" "$study"
rm -f "$outdir"/{synthetic.csv,synthetic.parquet,manifest.json,report.html,report.json}
mkdir -p "$work"/{data,logs}
logs=$work/logs
kits=$work/kits
ca=$kits/coordinator/ca.pem

# --- cleanup: end every process group this script started ---------------------------
# flower-superlink starts its flower-superexec (which starts flwr-serverapp) in a new
# process group, so the groups of all descendants are ended, not only our own.
groups=()
declare -A pid_of
descendant_groups() {  # descendant_groups PID...: process groups of PIDs and all their descendants
  ps -eo pid=,ppid=,pgid= | awk -v roots="$*" -v self="$(ps -o pgid= -p $$)" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2; group[$1] = $3 }
    END {
      do { grown = 0
           for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grown = 1 }
      } while (grown)
      for (p in keep) if ((p in group) && group[p] != self + 0) print group[p]
    }' | sort -u
}
any_alive() {
  local pgid
  for pgid in "$@"; do kill -0 -- "-$pgid" 2>/dev/null && return 0; done
  return 1
}
cleanup() {
  local status=$? pgid all=()
  trap - EXIT INT TERM
  if ((${#groups[@]})); then
    mapfile -t all < <(descendant_groups "${groups[@]}")
    all+=("${groups[@]}")
    for pgid in "${all[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
    for _ in {1..50}; do any_alive "${all[@]}" || break; sleep 0.1; done  # 5 s to shut down
    for pgid in "${all[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo "demo-deployment: interrupted; stopping what it started" >&2; exit 130' INT
trap 'echo "demo-deployment: terminated; stopping what it started" >&2; exit 143' TERM

start() {  # start NAME FLWR_HOME COMMAND...: in its own process group, logging to logs/NAME.log
  local name=$1 home=$2
  shift 2
  mkdir -p "$home"
  FLWR_HOME=$home setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  groups+=("$!")  # setsid in a non-interactive shell's child execs in place: pid = pgid
  pid_of[$name]=$!
}

step() {  # step NAME COMMAND...: run to completion, logging to logs/NAME.log, or fail
  local name=$1
  shift
  "$@" >"$logs/$name.log" 2>&1 || fail "$name failed (exit status $?)." "$logs/$name.log"
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- 1. the simulated hospitals' records and the data dictionary ----------------------
step data "$python" - "$work/data" "${SITES[@]}" <<'EOF'
import sys
from pathlib import Path
from protocols.demo_registry import simulate_registry

out, names = Path(sys.argv[1]), sys.argv[2:]
registry = simulate_registry(seed=0, n_sites=5)
(out / "schema.yaml").write_text(registry.schema_yaml)
for name, frame in zip(names, list(registry.sites.values())[:len(names)]):
    frame.to_csv(out / f"{name}.csv", index=False)
EOF
schema=$work/data/schema.yaml

# --- 2. provision the consortium: CA, SuperLink certificate, one kit per site --------
port=$(free_port)
address=127.0.0.1:$port
sites_csv=$(IFS=,; echo "${SITES[*]}")
step provision fedsynth-coordinator provision --sites "$sites_csv" --out "$kits" \
  --superlink "$address" --schema "$schema"

# --- 3. the SuperLink: TLS with the consortium certificate, enrolled nodes only ------
start superlink "$work/superlink-home" flower-superlink \
  --ssl-ca-certfile "$ca" \
  --ssl-certfile "$kits/coordinator/superlink.pem" \
  --ssl-keyfile "$kits/coordinator/superlink.key" \
  --enable-supernode-auth \
  --database "$work/superlink.db" \
  --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "$port"
"$python" - "$ca" "$port" "$WAIT_S" "${pid_of[superlink]}" <<'EOF' ||
import os, socket, ssl, sys, time

ca, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
context = ssl.create_default_context(cafile=ca)
while True:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            context.wrap_socket(raw, server_hostname="127.0.0.1").close()
        break
    except OSError:  # not listening yet (ssl.SSLError is an OSError too)
        os.kill(int(sys.argv[4]), 0)  # the SuperLink stopped: no point waiting
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.2)
EOF
  fail "the SuperLink did not complete a verified TLS handshake on $address within ${WAIT_S} s." \
    "$logs/superlink.log"
echo "SuperLink serving TLS on $address"

# --- 4. the flwr CLI's connection, and the enrolment of each site's node key ---------
flwr_home=$work/flwr-home
mkdir -p "$flwr_home"
cat >"$flwr_home/config.toml" <<EOF
[superlink]
default = "$CONNECTION"

[superlink.$CONNECTION]
address = "$address"
root-certificates = "$ca"
EOF
for site in "${SITES[@]}"; do
  FLWR_HOME=$flwr_home step "enrol-$site" flwr supernode register \
    "$kits/coordinator/enrolled/$site.pub" "$CONNECTION" --name "$site"
done

# --- 5. one node per hospital, each with its own kit, records and runtime port ------
for site in "${SITES[@]}"; do
  start "$site" "$work/$site-home" fedsynth-node start --kit "$kits/$site" \
    --data "$work/data/$site.csv" --runtime-port "$(free_port)"
done
# The study starts once every node is online, so that all three sites contribute.
deadline=$((SECONDS + WAIT_S))
while :; do
  for site in "${SITES[@]}"; do
    kill -0 "${pid_of[$site]}" 2>/dev/null || fail "the node of $site stopped." "$logs/$site.log"
  done
  online=$(FLWR_HOME=$flwr_home flwr supernode ls "$CONNECTION" --format json 2>/dev/null |
    "$python" -c 'import json, sys
nodes = json.load(sys.stdin).get("nodes", [])
print(sum(1 for n in nodes if str(n.get("status", "")).lower() == "online"))' 2>/dev/null || echo 0)
  ((online >= ${#SITES[@]})) && break
  if ((SECONDS > deadline)); then
    for site in "${SITES[@]}"; do echo "--- $site ---" >&2; tail -n 15 "$logs/$site.log" >&2; done
    fail "only $online of ${#SITES[@]} nodes came online within ${WAIT_S} s."
  fi
  sleep 0.5
done
echo "${#SITES[@]} nodes online: ${SITES[*]}"

# --- 6. the study ---------------------------------------------------------------------
# `fedsynth-coordinator study` fills the deployment keys (engine, schema-path, out-dir, the
# SuperLink's address, the CA, the signing key) from the coordinator kit; these are the rest.
run_config="local-steps=5 rows=500 round-timeout=120.0"
[[ -n $generator ]] && run_config+=" generator=\"$generator\""
[[ -n $rounds ]] && run_config+=" rounds=$rounds"
if [[ $secure == true ]]; then
  # SecAgg+ as `simulate` chooses it for this many sites: every site in every secure sum
  # (one that drops out stops the study), at most one colluding with the coordinator.
  secure_keys=$("$python" -c 'import sys
from protocols.plan_defaults import default_plan, secure_run_config
print(secure_run_config(default_plan(int(sys.argv[1]))[0]))' "${#SITES[@]}") ||
    fail "cannot read fedsynth's SecAgg+ defaults."
  run_config+=" $secure_keys"
fi
echo "running the study (generator: ${generator:-default}, rounds: ${rounds:-default}," \
  "secure aggregation: $secure); log: $logs/study.log"
# In the background and waited for, so that INT or TERM reach the trap at once. The study
# command ships the installed release (the bundle every kit pins) and exits 0 only when the
# study released a cohort signed by the consortium key (`flwr run` itself exits 0 always).
start study "$flwr_home" timeout "$STUDY_S" fedsynth-coordinator study "$CONNECTION" \
  --kit "$kits/coordinator" --schema "$schema" --out "$study" --run-config "$run_config"
if ! wait "${pid_of[study]}"; then
  reason=$(grep -oE '[A-Za-z_.]*(Error|Exception): .*' "$logs/study.log" | tail -n 1 || true)
  fail "the study ended without releasing a cohort${reason:+: $reason}" "$logs/study.log"
fi

# --- 7. the outputs, and what they say ------------------------------------------------
# A hospital checks the release against the consortium key in its own kit.
fedsynth-node verify "$study" --kit "$kits/${SITES[0]}" ||
  fail "the released cohort does not verify against the consortium's signing key."
for file in synthetic.csv synthetic.parquet manifest.json report.html report.json; do
  [[ -f $study/$file ]] && cp "$study/$file" "$outdir/"
done
"$python" - "$outdir" "$logs" <<'EOF' || fail "the manifest does not describe a TLS deployment study."
import json, sys
from pathlib import Path

out, logs = Path(sys.argv[1]), sys.argv[2]
manifest = json.loads((out / "manifest.json").read_text())
if manifest.get("engine") != "deployment" or manifest.get("tls") is not True:
    print(f"manifest.json: engine={manifest.get('engine')!r} tls={manifest.get('tls')!r}",
          file=sys.stderr)
    sys.exit(1)
print(f"\nsynthetic cohort: {out / 'synthetic.csv'} ({manifest['rows']} rows)")
print(f"manifest:         {out / 'manifest.json'} (engine deployment, TLS, "
      f"secure aggregation {'on' if manifest['secure_aggregation'] else 'off'})")
if (out / "report.html").exists():
    print(f"report:           {out / 'report.html'}")
print(f"sites that contributed: {', '.join(manifest['contributors'])}")
target = manifest["privacy"]["epsilon_target_per_site"]
for name, site in manifest["privacy"]["sites"].items():
    print(f"  {name}: epsilon spent {site['epsilon_spent']:.4f} of {target:g} "
          f"(delta {site['delta']:g})")
print(f"logs: {logs}")
EOF
