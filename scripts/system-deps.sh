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
if [ ${#_kawa_need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing system packages: ${_kawa_need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${_kawa_need[@]}" >/dev/null
fi
unset _kawa_need
