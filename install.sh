#!/usr/bin/env bash
# Install gatekeeper into ./.venv (Python 3.11+). With --test, also the test tools and
# the Debian packages the tests need (mosquitto), using apt-get when run as root or via sudo.
set -euo pipefail
cd "$(dirname "$0")"
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
PY=${PYTHON:-python3}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Python 3.11 or newer is needed ($PY is $("$PY" -V 2>&1))" >&2
    exit 1
fi

if [ "$WITH_TEST" = 1 ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    SUDO=""
    [ "$(id -u)" != 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
    # The Debian package starts a system broker on 1883; the tests start their own.
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip

# easyocr needs torch + torchvision from the same release. Pick a matching pair per
# machine: PyPI's torchvision does not import beside a mismatched torch.
case "$(uname -m)" in
    x86_64)  TORCH="torch==2.14.1 torchvision==0.29.1" ;;
    aarch64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;   # 64-bit Raspberry Pi OS (CPU build)
    *)       TORCH="torch torchvision" ;;
esac
.venv/bin/python -c 'import torch, torchvision' 2>/dev/null || .venv/bin/pip install -q $TORCH

extras=()
[ "$WITH_TEST" = 1 ] && extras+=(test)
[ "$(uname -m)" = aarch64 ] && extras+=(pi)   # lgpio pin factory on the Raspberry Pi
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
.venv/bin/pip install -q -e "$spec"
echo "gatekeeper installed in $(pwd)/.venv"
