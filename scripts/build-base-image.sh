#!/usr/bin/env bash
# Build the course's offline base image from Debian packages: no image registry needed.
#
#   scripts/build-base-image.sh [--force] [--minimal] [--mirror URL] [--include PKG,...] [IMAGE]
#
# debootstrap (variant minbase) installs a Debian bookworm tree with python3, python3-venv
# and ca-certificates, plus nginx and redis-server (the load-balancer and cache containers
# of later lessons; about 10 MB more, skip them with --minimal). The tree is trimmed (apt
# lists, package caches, docs except copyright files, man pages, locales) and imported with
# `docker import`. Python dependencies are not baked in: course_helpers.images builds a
# wheelhouse on the host and installs it into a venv with `pip install --no-index`.
#
# IMAGE defaults to mlops-course/base:bookworm. The script exits at once when IMAGE already
# exists, unless --force. The Debian mirror is --mirror or $DEBIAN_MIRROR, else the one the
# host's apt uses for bookworm (/etc/apt/sources.list{,.d}), else http://deb.debian.org/debian.
# Needs root (debootstrap chroots and creates device nodes), debootstrap and the docker CLI.
# The temporary root tree is deleted on success, failure and Ctrl-C.
set -euo pipefail

SUITE=bookworm
IMAGE=""
FORCE=0
MINIMAL=0
MIRROR="${DEBIAN_MIRROR:-}"
EXTRA=""
BASE_PACKAGES="python3,python3-venv,ca-certificates"
SERVER_PACKAGES="nginx,redis-server"

say() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --minimal) MINIMAL=1 ;;
        --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; MIRROR="$2"; shift ;;
        --mirror=*) MIRROR="${1#*=}" ;;
        --include) [ $# -ge 2 ] || die "--include needs a package list"; EXTRA="$2"; shift ;;
        --include=*) EXTRA="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$IMAGE" ] || die "only one image name, got '$IMAGE' and '$1'"; IMAGE="$1" ;;
    esac
    shift
done
IMAGE="${IMAGE:-mlops-course/base:bookworm}"

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (https://docs.docker.com/engine/install/)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker engine answered: start Docker (or use the course's local backend)"

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE already exists (use --force to rebuild)"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root (it chroots and creates device nodes): run with sudo"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] \
    || die "debootstrap is missing: sudo apt-get install debootstrap"
PATH="$PATH:/usr/sbin:/sbin"

# The first plain `deb` source whose suite is exactly bookworm and that carries `main`.
detect_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; comps = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    key = tolower(line); sub(/:.*/, "", key)
                    sub(/^[^:]*:[ \t]*/, "", line)
                    if (key == "types") types = line
                    else if (key == "uris") uris = line
                    else if (key == "suites") suites = line
                    else if (key == "components") comps = line
                    else if (key == "enabled") enabled = tolower(line)
                }
                if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ") \
                    && (" " comps " ") ~ / main /) { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) {
                    for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
                }
            }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    echo "http://deb.debian.org/debian"
}
[ -n "$MIRROR" ] || MIRROR=$(detect_mirror)

PACKAGES="$BASE_PACKAGES"
[ "$MINIMAL" = 1 ] || PACKAGES="$PACKAGES,$SERVER_PACKAGES"
[ -z "$EXTRA" ] || PACKAGES="$PACKAGES,$EXTRA"

WORK=""
CHILD=""
cleanup() {
    local status=$?
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM -- "-$CHILD" 2>/dev/null || kill -TERM "$CHILD" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.2; done
        ! kill -0 "$CHILD" 2>/dev/null || kill -KILL -- "-$CHILD" 2>/dev/null || true
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        # debootstrap may leave proc/sys mounted inside the tree when it fails: unmount first,
        # deepest first, and never let rm cross into another file system.
        awk -v p="$WORK/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf --one-file-system "$WORK" || say "warning: could not remove $WORK"
    fi
    [ "$status" = 0 ] || say "failed (exit $status); nothing was left behind"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/mlops-base-image.XXXXXX")
ROOTFS="$WORK/rootfs"
START=$(date +%s)

say "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
# In its own process group (set -m), so that a signal to this script stops all of it.
set -m
debootstrap --variant=minbase --include="$PACKAGES" --components=main \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.out" 2>&1 </dev/null &
CHILD=$!
set +m
if ! wait "$CHILD"; then
    CHILD=""
    tail -n 25 "$WORK/debootstrap.out" >&2
    [ ! -f "$ROOTFS/debootstrap/debootstrap.log" ] || tail -n 25 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (mirror $MIRROR; override with --mirror URL or DEBIAN_MIRROR)"
fi
CHILD=""
say "debootstrap done in $(( $(date +%s) - START )) s ($(du -sh --one-file-system "$ROOTFS" | cut -f1))"

# Trim what a container never needs; keep /usr/share/doc/*/copyright (licences).
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/archives/partial/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
    "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/debootstrap
find "$ROOTFS"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find "$ROOTFS"/usr/share/doc -mindepth 1 -type d -empty -delete
find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
find "$ROOTFS"/var/log -type f -delete
# Later `apt-get install` inside the image keeps it small too.
cat >"$ROOTFS"/etc/dpkg/dpkg.cfg.d/01-mlops-course-nodoc <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$ROOTFS"/etc/apt/apt.conf.d/01-mlops-course-norecommends
# Services must not try to start at install time inside a container.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS"/usr/sbin/policy-rc.d
chmod 755 "$ROOTFS"/usr/sbin/policy-rc.d
: >"$ROOTFS"/etc/machine-id
PYVER=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')

say "importing into docker as $IMAGE (Python $PYVER)"
OLD_ID=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.mlops-course.base=$SUITE" \
    --change "LABEL org.mlops-course.base.packages=$PACKAGES" \
    --change "LABEL org.mlops-course.base.python=$PYVER" \
    --message "mlops-course base: debootstrap $SUITE minbase + $PACKAGES" \
    - "$IMAGE" >/dev/null

SIZE=$(docker image inspect --format '{{.Size}}' "$IMAGE")
# The image this one replaces (--force), unless images built on it still need it.
[ -z "$OLD_ID" ] || docker image rm "$OLD_ID" >/dev/null 2>&1 || true
say "built $IMAGE in $(( $(date +%s) - START )) s, $(( SIZE / 1000000 )) MB"
