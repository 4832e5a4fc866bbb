# shellcheck shell=bash
# Builds the solution once (Release) and runs the built CLI. Expects OSTOR_ROOT.

build_solution() {
  # Tests that drive these scripts run on binaries their own build made.
  [ -n "${OSTOR_NO_BUILD:-}" ] && return 0
  echo "building OrleansStorage (Release)..."
  dotnet build "$OSTOR_ROOT/OrleansStorage.sln" -c Release -nologo -v quiet -clp:ErrorsOnly >/dev/null \
    || { dotnet build "$OSTOR_ROOT/OrleansStorage.sln" -c Release -nologo -v quiet -clp:ErrorsOnly; return 1; }
}

ostor_cli() {
  local dll=$OSTOR_ROOT/Client/bin/Release/net10.0/ostor.dll
  [ -f "$dll" ] || build_solution >&2
  local gateways=${OSTOR_DATA:-$OSTOR_ROOT/.data}/gateways
  if [ -z "${OSTOR_GATEWAY:-}" ] && [ -f "$gateways" ]; then
    OSTOR_GATEWAY=$(cat "$gateways")
    export OSTOR_GATEWAY
  fi
  # The local cluster speaks TLS with the certificates infra/cluster up made.
  if [ -z "${OSTOR_PKI:-}" ] && [ -f "${OSTOR_DATA:-$OSTOR_ROOT/.data}/pki/ca.crt" ]; then
    OSTOR_PKI=${OSTOR_DATA:-$OSTOR_ROOT/.data}/pki
    export OSTOR_PKI
  fi
  dotnet "$dll" "$@"
}
