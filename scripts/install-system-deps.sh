#!/usr/bin/env bash
# Installs the Debian packages a purpose needs, only those missing. Purposes: test, bench.
set -euo pipefail
purpose=${1:-test}
case "$purpose" in
  test)  pkgs=(chromium prometheus prometheus-alertmanager postgresql-client openvpn transmission-cli transmission-daemon iproute2 tshark haproxy nftables
         slapd ldap-utils krb5-kdc krb5-admin-server krb5-user libkrb5-dev freeradius-utils curl) ;;
  bench) pkgs=(chromium prometheus postgresql-client e2guardian squid squidguard libndpi-bin wrk nginx-light haproxy) ;;
  *) echo "unknown purpose: $purpose" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Packaged daemons must not grab the ports our tests and benchmarks use.
for svc in prometheus prometheus-alertmanager e2guardian squid nginx haproxy transmission-daemon slapd krb5-kdc krb5-admin-server; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
