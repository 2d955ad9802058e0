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

# Debian packages. REQUIRED: compiler and build, tests (cmocka; clang for the fuzz
# suite's libFuzzer targets), the book (pandoc, gnuplot, and Chromium for the PDF and
# the book's render test). OPTIONAL: the peers lab 3 compares against (OpenBLAS, BLIS,
# oneDNN), never dependencies of the library itself: without them lab 3 measures our
# code alone and says so.
REQUIRED="gcc g++ libc6-dev meson ninja-build pkgconf python3 git libcmocka-dev libpng-dev libjpeg-dev
clang pandoc gnuplot-nox chromium fonts-dejavu-core poppler-utils"
OPTIONAL="libopenblas-openmp-dev libblis-openmp-dev libdnnl-dev"
# Chapter 8's ONNX tests (skipped without them): python3-onnx's checker, and node + npm
# for ONNX Runtime (npm onnxruntime-node, see install_onnxruntime), unless a node with
# npm is already there (NodeSource's nodejs bundles npm and conflicts with Debian's).
OPTIONAL="$OPTIONAL python3-onnx python3-numpy"
command -v node >/dev/null 2>&1 || OPTIONAL="$OPTIONAL nodejs"
command -v npm >/dev/null 2>&1 || OPTIONAL="$OPTIONAL npm"

# Prints the packages of the list $1 that are not installed.
missing_of() {
    for p in $1; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            printf ' %s' "$p"
    done
}

install_packages() {
    req=$(missing_of "$REQUIRED")
    opt=$(missing_of "$OPTIONAL")
    [ -z "$req$opt" ] && return 0
    if [ "$(id -u)" -eq 0 ]; then SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
    else
        if [ -n "$req" ]; then
            echo "run.sh: these required Debian packages are missing and this user cannot" \
                 "install them (not root, no sudo): apt-get install$req" >&2
            exit 1
        fi
        echo "run.sh: optional peer libraries not installed (lab 3 measures without them):$opt"
        return 0
    fi
    echo "run.sh: installing Debian packages:$req$opt"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -q update
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $req $opt
}

# npm's onnxruntime-node (CPU runtime inside the package) into build-node/ (ignored by
# git, kept across builds) for test_onnx_runtime; --ignore-scripts: its install script
# would download a GPU provider. Optional: without it that test is skipped.
install_onnxruntime() {
    [ -d build-node/node_modules/onnxruntime-node ] && return 0
    command -v npm >/dev/null 2>&1 || return 0
    echo "run.sh: installing onnxruntime-node (npm) into build-node/"
    mkdir -p build-node
    npm install --prefix build-node --ignore-scripts --no-audit --no-fund onnxruntime-node@1.30.0 ||
        echo "run.sh: onnxruntime-node not installed: test_onnx_runtime will be skipped"
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
    install_onnxruntime
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
