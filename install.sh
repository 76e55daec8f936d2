#!/usr/bin/env bash
# Install gatekeeper into ./.venv (Python 3.11+): the lane runtime (onnxruntime, OpenCV headless;
# no torch). --test also installs the test tools and the Debian packages the tests need
# (mosquitto), using apt-get when run as root or via sudo. --train also installs torch's CPU
# build, EasyOCR and onnx for training/ and training/export_onnx.py. Flags combine.
set -euo pipefail
cd "$(dirname "$0")"
WITH_TEST=0
WITH_TRAIN=0
for arg in "$@"; do
    case "$arg" in
        --test)  WITH_TEST=1 ;;
        --train) WITH_TRAIN=1 ;;
        *) echo "install.sh: unknown option $arg (expected --test, --train)" >&2; exit 2 ;;
    esac
done
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

extras=()
[ "$WITH_TEST" = 1 ] && extras+=(test)
[ "$(uname -m)" = aarch64 ] && extras+=(pi)   # lgpio pin factory on the Raspberry Pi
if [ "$WITH_TRAIN" = 1 ]; then
    # torch's CPU build, never the CUDA one (3 GB of GPU libraries on a machine without a GPU).
    # easyocr pulls torchvision, which must come from the same release as torch.
    case "$(uname -m)" in
        x86_64)  TORCH="torch==2.13.0+cpu torchvision==0.28.0" ;;
        aarch64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;   # 64-bit Raspberry Pi OS: CPU build
        *)       TORCH="torch torchvision" ;;
    esac
    .venv/bin/python -c 'import torch, torchvision' 2>/dev/null || .venv/bin/pip install -q $TORCH
    extras+=(train)
fi
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
.venv/bin/pip install -q -e "$spec"
echo "gatekeeper installed in $(pwd)/.venv"
