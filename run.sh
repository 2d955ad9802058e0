#!/bin/sh
# run.sh — the two commands of the quick start (run as root on Debian 12, or with sudo).
#
#   ./run.sh main   install what is needed, build, and run the main job: the book
#                   (its labs run in --quick mode and their CSVs become its tables)
#   ./run.sh test   install what is needed, build, and run every test suite; ends
#                   with the line "N passed, N failed, N skipped"
#
# Either works first on a fresh machine. BUILD_DIR (default: build) picks the build
# directory; MESON_ARGS adds configure options (e.g. -Dwerror=true).
set -eu
cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}

# Debian packages: compiler and build, tests, the book (pandoc, gnuplot, and Chromium
# for the PDF and the book's render test), and the libraries lab 3 compares against
# (OpenBLAS, BLIS, oneDNN: optional, never dependencies of the library itself).
PACKAGES="gcc g++ libc6-dev meson ninja-build pkgconf python3 git libcmocka-dev libpng-dev
pandoc gnuplot-nox chromium fonts-dejavu-core
libopenblas-openmp-dev libblis-openmp-dev libdnnl-dev"

install_packages() {
    missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "run.sh: installing Debian packages:$missing"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""
    elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"
    else
        echo "run.sh: need root to install:$missing (apt-get install$missing)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -q update
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $missing
}

configure() {
    if [ ! -f "$BUILD_DIR/build.ninja" ]; then
        # shellcheck disable=SC2086
        meson setup "$BUILD_DIR" ${MESON_ARGS:-}
    fi
    ninja -C "$BUILD_DIR"
}

case "${1:-}" in
main)
    install_packages
    configure
    ninja -C "$BUILD_DIR" book
    echo "run.sh: the book is $BUILD_DIR/book/conv2d-reimagined.html"
    ;;
test)
    install_packages
    configure
    status=0
    meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 || status=$?
    python3 tests/summarize.py "$BUILD_DIR/meson-logs/testlog.json" || status=1
    exit $status
    ;;
*)
    echo "usage: ./run.sh main | test" >&2
    exit 2
    ;;
esac
