#!/usr/bin/env bash
# A PNG of the dashboard as headless Chromium shows it, for the docs:
#   scripts/dashboard-screenshot.sh 'http://127.0.0.1:PORT/dashboard?token=…' docs/dashboard.png
# (the URL `premem run` prints; take it while the run is going). Needs
# Debian's chromium (`make test-tools` installs it).
set -euo pipefail
url=${1:?usage: $0 DASHBOARD_URL OUT.png}
out=${2:?usage: $0 DASHBOARD_URL OUT.png}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# The flags a closed network needs (no background connections), a fresh
# profile, and 8 s of page time for the polls and the charts.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1400,1000 --hide-scrollbars \
  --virtual-time-budget=8000 --screenshot="$out" "$url" 2>/dev/null
echo "dashboard screenshot: $out"
