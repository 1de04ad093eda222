#!/usr/bin/env bash
# The browser of the console's tests: Debian's headless Chromium and its
# WebDriver (packages chromium and chromium-driver, /usr/bin/chromium and
# /usr/bin/chromedriver). Installs them when missing (apt-get, as root or
# through sudo); does nothing when they are there.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
echo "browser: installing chromium and chromium-driver (Debian packages, once)" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "browser: run as root, or install chromium and chromium-driver" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q chromium chromium-driver >/dev/null \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { echo "browser: chromium or chromedriver still missing" >&2; exit 1; }
