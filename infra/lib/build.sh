# shellcheck shell=bash
# Builds the solution once (Release) and runs the built CLI. Expects OSTOR_ROOT.

build_solution() {
  # Tests that drive these scripts run on binaries their own build made.
  [ -n "${OSTOR_NO_BUILD:-}" ] && return 0
  echo "building OrleansStorage (Release)..."
  dotnet build "$OSTOR_ROOT/OrleansStorage.sln" -c Release -nologo -v quiet -clp:ErrorsOnly >/dev/null \
    || { dotnet build "$OSTOR_ROOT/OrleansStorage.sln" -c Release -nologo -v quiet -clp:ErrorsOnly; return 1; }
}

# The built CLI's environment for the local cluster: its gateways and, unless OSTOR_INSECURE=1,
# the certificates infra/cluster up made (the cluster speaks TLS with them).
ostor_cli_prepare() {
  OSTOR_DLL=$OSTOR_ROOT/Client/bin/Release/net10.0/ostor.dll
  [ -f "$OSTOR_DLL" ] || build_solution >&2
  local data=${OSTOR_DATA:-$OSTOR_ROOT/.data}
  if [ -z "${OSTOR_GATEWAY:-}" ] && [ -f "$data/gateways" ]; then
    OSTOR_GATEWAY=$(cat "$data/gateways")
    export OSTOR_GATEWAY
  fi
  if [ -z "${OSTOR_PKI:-}" ] && [ "${OSTOR_INSECURE:-}" != 1 ] && [ -f "$data/pki/ca.crt" ]; then
    OSTOR_PKI=$data/pki
    export OSTOR_PKI
  fi
}

ostor_cli() {
  ostor_cli_prepare
  dotnet "$OSTOR_DLL" "$@"
}
