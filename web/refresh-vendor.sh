#!/usr/bin/env bash
# Refreshes app/vendor/ from the packages pinned in package-lock.json: installs exactly the
# locked versions (`npm ci`) and copies the files vendor.txt lists. To move to a new version,
# change package.json, run `npm install` once (it rewrites the lock), then this script, and
# commit all three.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
while read -r from to; do
  case "$from" in ''|'#'*) continue ;; esac
  cp "node_modules/$from" "app/vendor/$to"
done < vendor.txt
echo "refreshed web/app/vendor/ from package-lock.json"
