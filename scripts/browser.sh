#!/usr/bin/env bash
# Headless Chromium + ChromeDriver for the browser test (tests/test_mlflow_ui.py), from Debian's
# packages `chromium` and `chromium-driver`. Only the test run needs them, so only scripts/test.sh
# calls this. Where they cannot be installed (no root, no apt-get) the test is skipped and says why.
set -uo pipefail
if [ -x /usr/lib/chromium/chromium ] && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Debian's chromium and chromium-driver for the browser test"
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver; } >"$log" 2>&1; then
    echo "[test] could not install chromium ($log); the browser test will be skipped"
  fi
else
  echo "[test] no chromium, and no root apt-get to install it: the browser test will be skipped"
fi
exit 0
