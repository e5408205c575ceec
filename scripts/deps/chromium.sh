#!/usr/bin/env bash
# Chromium: the web gallery's end-to-end tests drive Debian's browser through Playwright
# (Playwright's own browser downloads are not used). Does nothing when it is present.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
[ "$(id -u)" = 0 ] || { echo "install chromium (apt-get install chromium fonts-dejavu-core)" >&2; exit 1; }
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  chromium fonts-dejavu-core fonts-liberation
