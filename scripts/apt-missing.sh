#!/usr/bin/env bash
# Install the Debian packages given as arguments that are not installed yet (apt, as root);
# without root, name them and fail. Used by setup.sh and setup-guest.sh.
#   scripts/apt-missing.sh LABEL PACKAGE...
set -euo pipefail
label=$1
shift
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "$label: need Debian packages ${missing[*]}: run as root, or install them first" >&2
  exit 1
fi
echo "$label: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
