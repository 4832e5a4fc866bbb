# shellcheck shell=bash
# Builds the solution once (Release) and runs the built CLI. Expects OSTOR_ROOT.

build_solution() {
  echo "building OrleansStorage (Release)..."
  dotnet build "$OSTOR_ROOT/OrleansStorage.sln" -c Release -nologo -v quiet -clp:ErrorsOnly >/dev/null \
    || { dotnet build "$OSTOR_ROOT/OrleansStorage.sln" -c Release -nologo -v quiet -clp:ErrorsOnly; return 1; }
}

ostor_cli() {
  local dll=$OSTOR_ROOT/Client/bin/Release/net10.0/ostor.dll
  [ -f "$dll" ] || build_solution >&2
  if [ -z "${OSTOR_GATEWAY:-}" ] && [ -f "$OSTOR_ROOT/.data/gateways" ]; then
    OSTOR_GATEWAY=$(cat "$OSTOR_ROOT/.data/gateways")
    export OSTOR_GATEWAY
  fi
  dotnet "$dll" "$@"
}
