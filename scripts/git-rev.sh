#!/bin/sh
# The revision the build stamps into lib/git_rev.h (and every lab's CSV provenance):
# $CR_GIT_REV when it is set, else `git describe` of the source tree ($1).
# CR_GIT_REV is for a copy of the tree whose .git is not its own: the device machine
# receives the working tree with the .git of the session's start, so `git describe` there
# names a stale commit plus "-dirty"; whoever sends the tree passes the real one, e.g.
#   device run: CR_GIT_REV=$(git rev-parse --short=10 HEAD) bash scripts/gpu-check.sh
# (computed here, before the call, from a clean tree).
if [ -n "${CR_GIT_REV:-}" ]; then
    echo "$CR_GIT_REV"
else
    exec git -C "$1" describe --always --dirty --abbrev=10
fi
