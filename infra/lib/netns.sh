# shellcheck shell=bash
# The local cluster over a real network: each host in its own Linux network namespace with its
# own address on a bridge that this script creates, PostgreSQL and the clients on the bridge's
# own address. Nothing here routes anywhere else: the subnet exists only on the bridge and in the
# namespaces, and netns_down removes all of it. Needs root (ip netns, nft). Expects DATA.
#
#   OSTOR_NETNS_PREFIX  names of the bridge, namespaces and veths (default ostor)
#   OSTOR_NETNS_SUBNET  first three octets of the /24 (default 10.231.0); .1 is the bridge,
#                       .(10+N) is host-N

OSTOR_NETNS_PREFIX=${OSTOR_NETNS_PREFIX:-ostor}
OSTOR_NETNS_SUBNET=${OSTOR_NETNS_SUBNET:-10.231.0}

netns_bridge() { echo "${OSTOR_NETNS_PREFIX}-br"; }
netns_name() { echo "${OSTOR_NETNS_PREFIX}-host-$1"; }
netns_bridge_address() { echo "$OSTOR_NETNS_SUBNET.1"; }
netns_host_address() { echo "$OSTOR_NETNS_SUBNET.$((10 + $1))"; }

# Whether this data folder's cluster runs in namespaces (the marker holds the prefix and subnet).
netns_enabled() { [ -f "$DATA/netns" ]; }

netns_load() {
  # shellcheck disable=SC1091
  netns_enabled && source "$DATA/netns"
  return 0
}

netns_require() {
  [ "$(id -u)" -eq 0 ] || { echo "error: --netns needs root (ip netns, veth, nft)" >&2; return 1; }
  command -v ip >/dev/null || { echo "error: --netns needs iproute2 (apt-get install iproute2)" >&2; return 1; }
  if ! command -v nft >/dev/null; then
    echo "nft not found; installing the Debian package 'nftables'..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null || { echo "error: could not install nftables" >&2; return 1; }
  fi
}

# Bridge plus one namespace per host 1..N; safe to run again.
netns_up() {
  local hosts=$1 br i ns veth
  netns_require || return 1
  br=$(netns_bridge)
  if ! ip link show "$br" >/dev/null 2>&1; then
    ip link add "$br" type bridge
    ip addr add "$(netns_bridge_address)/24" dev "$br"
  fi
  ip link set "$br" up
  for ((i = 1; i <= hosts; i++)); do
    ns=$(netns_name "$i")
    veth="${OSTOR_NETNS_PREFIX}-v$i"
    ip netns list | grep -qx "$ns\( .*\)\?" || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
      ip link set "$veth" master "$br" up
      ip -n "$ns" addr add "$(netns_host_address "$i")/24" dev eth0
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
  printf 'OSTOR_NETNS_PREFIX=%s\nOSTOR_NETNS_SUBNET=%s\n' "$OSTOR_NETNS_PREFIX" "$OSTOR_NETNS_SUBNET" >"$DATA/netns"
}

netns_down() {
  local ns
  netns_enabled || return 0
  netns_load
  for ns in $(ip netns list | awk '{print $1}' | grep "^${OSTOR_NETNS_PREFIX}-host-[0-9]*$"); do
    ip netns del "$ns"
  done
  ip link del "$(netns_bridge)" 2>/dev/null || true
  rm -f "$DATA/netns"
  echo "network namespaces and bridge removed"
}

# The nft table that holds a host's partition rules, inside its namespace.
netns_partition_table() { echo "ostor_partition"; }

# Cuts host N off from the given peers, both ways: "host-M" (its silo and gateway), "db"
# (PostgreSQL) and "clients" (this machine's clients reaching its gateway). Established
# connections stall as on a real network.
netns_partition() {
  local i=$1 ns table peer m
  shift
  ns=$(netns_name "$i")
  table=$(netns_partition_table)
  ip netns exec "$ns" nft add table inet "$table"
  ip netns exec "$ns" nft "add chain inet $table input { type filter hook input priority 0; policy accept; }"
  ip netns exec "$ns" nft "add chain inet $table output { type filter hook output priority 0; policy accept; }"
  for peer in "$@"; do
    case "$peer" in
      host-*)
        m=${peer#host-}
        ip netns exec "$ns" nft add rule inet "$table" input ip saddr "$(netns_host_address "$m")" drop
        ip netns exec "$ns" nft add rule inet "$table" output ip daddr "$(netns_host_address "$m")" drop
        ;;
      db)
        ip netns exec "$ns" nft add rule inet "$table" output ip daddr "$(netns_bridge_address)" tcp dport "$OSTOR_PG_PORT" drop
        ip netns exec "$ns" nft add rule inet "$table" input ip saddr "$(netns_bridge_address)" tcp sport "$OSTOR_PG_PORT" drop
        ;;
      clients)
        # Both of a client's doors: the gateway (control) and the data port (reads and writes).
        for port in "$((GATEWAY_PORT_BASE + i - 1))" "$((DATA_PORT_BASE + i - 1))"; do
          ip netns exec "$ns" nft add rule inet "$table" input ip saddr "$(netns_bridge_address)" tcp dport "$port" drop
          ip netns exec "$ns" nft add rule inet "$table" output ip daddr "$(netns_bridge_address)" tcp sport "$port" drop
        done
        ;;
      *) echo "error: unknown peer '$peer': use host-N, db or clients" >&2; return 2 ;;
    esac
  done
}

netns_heal() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^${OSTOR_NETNS_PREFIX}-host-[0-9]*$"); do
    ip netns exec "$ns" nft delete table inet "$(netns_partition_table)" 2>/dev/null || true
  done
}
