#!/usr/bin/env bash
# System packages the tests and the demo need, installed once with apt-get when missing (CI runs as root).
# Sourced by scripts/test.sh; safe to run on its own.
_kawa_need=()
command -v java >/dev/null || _kawa_need+=(default-jre-headless)
command -v mvn >/dev/null || _kawa_need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || _kawa_need+=(postgresql)
if [ -n "${KAWA_NEED_CHROMIUM:-1}" ] && [ -d "$(dirname "${BASH_SOURCE[0]}")/../src/kawa/portal" ]; then
  command -v chromium >/dev/null || _kawa_need+=(chromium)
fi
# Ceph (mon, OSD, RGW) for the tests on a real RGW: scripts/ceph.sh; recommends left out (about 40 s).
_kawa_ceph=()
for _kawa_bin in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw ceph-authtool:ceph-common; do
  command -v "${_kawa_bin%%:*}" >/dev/null || _kawa_ceph+=("${_kawa_bin##*:}")
done
if [ ${#_kawa_need[@]} -gt 0 ] || [ ${#_kawa_ceph[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  [ ${#_kawa_need[@]} -eq 0 ] || echo "installing system packages: ${_kawa_need[*]}"
  $SUDO apt-get update -qq
  if [ ${#_kawa_need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${_kawa_need[@]}" >/dev/null
  fi
  if [ ${#_kawa_ceph[@]} -gt 0 ]; then
    echo "installing Ceph packages: ${_kawa_ceph[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${_kawa_ceph[@]}" >/dev/null
  fi
fi
unset _kawa_need _kawa_ceph _kawa_bin
