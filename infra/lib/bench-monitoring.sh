# shellcheck shell=bash
# infra/bench monitoring: what the HTTP endpoint (metrics, dashboard) costs a silo in CPU, measured
# on the local cluster in one run: without the endpoint (OSTOR_HTTP_PORT_BASE=0), with it and
# nobody looking, then with infra/monitoring's prometheus scraping every 5 s and one dashboard
# page open (a request to /api/overview every second). Each phase restarts the cluster and lets
# it settle first. Prints the CPU of each silo as a percentage of one core, and ratios against
# the phase without the endpoint.

bench_monitoring() {
  local seconds=60 settle=15
  while [ $# -gt 0 ]; do
    case "$1" in
      --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
      *) echo "unknown option: $1 (infra/bench monitoring [--seconds N])" >&2; exit 2 ;;
    esac
  done
  [[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "error: --seconds must be a positive number" >&2; exit 2; }
  local data=${OSTOR_DATA:-$OSTOR_ROOT/.data} ticks
  ticks=$(getconf CLK_TCK)

  # CPU seconds (user + system) a process has used so far.
  cpu_seconds() { awk -v t="$ticks" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }

  # Average CPU of the silos over $seconds, in percent of one core, one line per host, then the mean.
  measure() {
    local pids=() before=() i pid sum=0 line=""
    for f in "$data"/pids/host-*.pid; do pids+=("$(cat "$f")"); done
    for pid in "${pids[@]}"; do before+=("$(cpu_seconds "$pid")"); done
    sleep "$seconds"
    for i in "${!pids[@]}"; do
      local pct
      pct=$(awk -v a="${before[$i]}" -v b="$(cpu_seconds "${pids[$i]}")" -v s="$seconds" 'BEGIN { printf "%.3f", (b - a) / s * 100 }')
      line+="${line:+ }$pct"
      sum=$(awk -v x="$sum" -v y="$pct" 'BEGIN { print x + y }')
    done
    awk -v s="$sum" -v n="${#pids[@]}" -v l="$line" 'BEGIN { printf "%.3f|%s\n", s / n, l }'
  }

  restart() {
    "$OSTOR_ROOT/infra/cluster" down >/dev/null
    OSTOR_HTTP_PORT_BASE=$1 "$OSTOR_ROOT/infra/cluster" up >/dev/null
    sleep "$settle"
  }

  echo "measuring each phase for $seconds s after $settle s of settling (CPU of each silo, % of one core)" >&2
  build_solution >&2
  local off on looked
  restart 0
  off=$(measure)
  echo "no HTTP endpoint: ${off%%|*} % (hosts: ${off#*|})" >&2
  restart 18080
  on=$(measure)
  echo "endpoint, nobody looking: ${on%%|*} % (hosts: ${on#*|})" >&2
  OSTOR_PROMETHEUS_INTERVAL=5s "$OSTOR_ROOT/infra/monitoring" up >/dev/null
  local end=$((SECONDS + seconds + 5))
  ( while ((SECONDS < end)); do curl -fs -o /dev/null http://127.0.0.1:18080/api/overview; sleep 1; done ) &
  local page=$!
  looked=$(measure)
  kill "$page" 2>/dev/null || true
  wait "$page" 2>/dev/null || true
  "$OSTOR_ROOT/infra/monitoring" down >/dev/null
  echo "prometheus every 5 s + a dashboard page: ${looked%%|*} % (hosts: ${looked#*|})" >&2

  printf '\n| phase | silo CPU (%% of one core, mean of hosts) | per host | minus no-endpoint |\n| --- | ---: | --- | ---: |\n'
  local phase value
  for phase in "no HTTP endpoint:$off" "endpoint, nobody looking:$on" "prometheus every 5 s + a dashboard page:$looked"; do
    value=${phase#*:}
    printf '| %s | %s | %s | %+.3f |\n' "${phase%%:*}" "${value%%|*}" "${value#*|}" "$(awk -v a="${value%%|*}" -v b="${off%%|*}" 'BEGIN { print a - b }')"
  done
}
