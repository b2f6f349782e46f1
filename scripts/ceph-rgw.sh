#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway (S3) on 127.0.0.1, for tests.
#
#   scripts/ceph-rgw.sh install   install Debian's radosgw, ceph-mon, ceph-osd, ceph-common
#                                 when missing (root; apt-get)
#   scripts/ceph-rgw.sh start     one monitor, one OSD (memstore), radosgw at a free port and
#                                 two test users; waits until the gateway answers, then prints
#                                 the endpoint and keys and writes them to $CEPH_RGW_DIR/env
#   scripts/ceph-rgw.sh stop      stop the daemons started here (their own pids only) and
#                                 wait for them to exit
#   scripts/ceph-rgw.sh clean     stop, then remove $CEPH_RGW_DIR
#
# Everything lives under one directory, $CEPH_RGW_DIR (default: a fixed name under $TMPDIR):
# configuration, monitor and OSD data, logs, sockets, pids. No systemd, nothing in /etc or
# /var/lib. CEPH_OSD_STORE=bluestore puts the OSD on a sparse file there instead of memory.
#
# What this needs, found on Debian 12 with Ceph 16.2 (see docs/compatibility.md):
# - auth none for the cluster, and radosgw then also needs "ms mon client mode = crc" and
#   "ms client mode = crc" (else it retries forever with error -13);
# - pools of size 1 with few PGs and no autoscaler; no ceph-mgr (its HEALTH_WARN is
#   cosmetic); a monitor port below 32768;
# - a bluestore block file not named "<osd data>/block";
# - short RGW garbage-collection waits, or deleted objects pile up in memstore;
# - "osd max object name len" left at its default 2048 (460, which guides give for ext4,
#   makes every key over ~415 bytes fail with a 500).
set -euo pipefail

DIR=${CEPH_RGW_DIR:-${TMPDIR:-/tmp}/file-storage-ceph-rgw}
CONF=$DIR/ceph.conf
STORE=${CEPH_OSD_STORE:-memstore}
START_TIMEOUT=${CEPH_START_TIMEOUT:-120}  # seconds for each wait below
STOP_TIMEOUT=30

# The test users: known keys, for tests only (never real credentials).
ACCESS_KEY=${CEPH_RGW_ACCESS_KEY:-CEPHTESTACCESSKEY001}
SECRET_KEY=${CEPH_RGW_SECRET_KEY:-ceph-test-secret-key-that-must-never-be-printed}
OTHER_ACCESS_KEY=CEPHTESTACCESSKEY002
OTHER_SECRET_KEY=ceph-other-user-secret-key-for-tests-only

PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)

log() { echo "ceph-rgw: $*" >&2; }

die() {
    log "$*"
    show_logs
    exit 1
}

show_logs() {
    [ -d "$DIR/log" ] || return 0
    local file
    for file in "$DIR"/log/*.log; do
        [ -s "$file" ] || continue
        log "---- last lines of $file"
        tail -n 30 "$file" >&2 || true
    done
}

# A free TCP port on 127.0.0.1 in [low, high], picked by binding it.
free_port() {
    python3 - "$1" "$2" <<'EOF'
import random, socket, sys
low, high = int(sys.argv[1]), int(sys.argv[2])
for port in random.sample(range(low, high + 1), 200):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        sys.exit(0)
sys.exit("no free port")
EOF
}

# Wait until "$@" succeeds, at most $1 seconds; false when it never did.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        check_alive
        sleep 0.5
    done
}

# Run a daemon in the foreground of a background job; remember its pid.
spawn() {
    local name=$1
    shift
    "$@" >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/pids/$name"
}

# True when pid file $1 names a live process started with our configuration file.
ours() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF"
}

check_alive() {
    local file
    for file in "$DIR"/pids/*; do
        [ -e "$file" ] || continue
        ours "$file" || die "$(basename "$file") exited during start-up"
    done
}

ceph_cli() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

cmd_install() {
    local missing=()
    for tool in radosgw ceph-mon ceph-osd ceph radosgw-admin monmaptool; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "missing ${missing[*]}; install as root: apt-get install -y ${PACKAGES[*]}"
        exit 1
    fi
    log "installing ${PACKAGES[*]} (Debian's Ceph; about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${PACKAGES[@]}" \
        >/dev/null
}

write_conf() {
    local fsid=$1 mon_port=$2 rgw_port=$3
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
mon initial members = a
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = true
keyring = $DIR/keyring
# a throwaway cluster on loopback: no cephx; radosgw then needs crc mode on msgr2
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
# one OSD: pools of size 1, few PGs, no autoscaler, no mgr
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
# leave room on a small shared machine
osd op num shards = 1
osd op num threads per shard = 2
ms async op threads = 2

[mon]
mon data = $DIR/mon/\$cluster-\$id
mon data avail crit = 1

[osd]
osd data = $DIR/osd/\$cluster-\$id
osd objectstore = $STORE
memstore device bytes = 4294967296
# never named <osd data>/block: that name is where bluestore looks for a device symlink
bluestore block path = $DIR/osd-block.img
bluestore block create = true
bluestore block size = 10737418240
bluestore block db create = false
bluestore block wal create = false

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
# reclaim deleted objects quickly (the defaults wait two hours)
rgw gc obj min wait = 10
rgw gc processor period = 10
rgw gc processor max time = 10
rgw enable usage log = false
EOF
}

cmd_start() {
    cmd_install_check
    if [ -d "$DIR/pids" ] && ls "$DIR"/pids/* >/dev/null 2>&1; then
        log "$DIR holds a cluster already; run: $0 clean"
        exit 1
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"/{run,log,pids,mon,osd/ceph-0,rgw}
    # on failure, stop what was started and show the logs
    trap 'status=$?; if [ $status -ne 0 ]; then show_logs; cmd_stop; fi; exit $status' EXIT

    local fsid mon_port rgw_port
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    mon_port=$(free_port 10000 32767)  # monitors want a port below 32768
    rgw_port=$(free_port 10000 60999)
    write_conf "$fsid" "$mon_port" "$rgw_port"
    log "starting in $DIR (monitor 127.0.0.1:$mon_port, gateway 127.0.0.1:$rgw_port)"

    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' \
        >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" \
        >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
        >>"$DIR/log/mkfs.out" 2>&1 || die "ceph-mon --mkfs failed"
    spawn mon ceph-mon -c "$CONF" -i a -f
    wait_for "$START_TIMEOUT" "the monitor" ceph_cli mon stat || die "the monitor did not start"

    local osd_uuid osd_id
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    osd_id=$(ceph_cli osd new "$osd_uuid") || die "ceph osd new failed"
    [ "$osd_id" = 0 ] || die "expected osd.0, got osd.$osd_id"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$DIR/log/mkfs.out" 2>&1 \
        || die "ceph-osd --mkfs failed"
    spawn osd ceph-osd -c "$CONF" -i 0 -f
    wait_for "$START_TIMEOUT" "the OSD" osd_up || die "the OSD did not come up"

    spawn rgw radosgw -c "$CONF" -n client.rgw.a -f
    wait_for "$START_TIMEOUT" "the gateway" gateway_answers "$rgw_port" \
        || die "the gateway did not answer"

    make_user test "$ACCESS_KEY" "$SECRET_KEY"
    make_user other "$OTHER_ACCESS_KEY" "$OTHER_SECRET_KEY"

    cat >"$DIR/env" <<EOF
export FILE_STORAGE_TEST_S3_SERVER=ceph
export FILE_STORAGE_TEST_S3_ENDPOINT=http://127.0.0.1:$rgw_port
export FILE_STORAGE_TEST_S3_ACCESS_KEY_ID=$ACCESS_KEY
export FILE_STORAGE_TEST_S3_SECRET_ACCESS_KEY=$SECRET_KEY
export FILE_STORAGE_TEST_S3_OTHER_ACCESS_KEY_ID=$OTHER_ACCESS_KEY
export FILE_STORAGE_TEST_S3_OTHER_SECRET_ACCESS_KEY=$OTHER_SECRET_KEY
EOF
    trap - EXIT
    log "ready after ${SECONDS}s; the test settings are in $DIR/env:"
    cat "$DIR/env"
}

cmd_install_check() {
    for tool in radosgw ceph-mon ceph-osd ceph radosgw-admin monmaptool ceph-authtool; do
        command -v "$tool" >/dev/null 2>&1 || {
            log "$tool is missing: run $0 install (as root)"
            exit 1
        }
    done
}

osd_up() {
    ceph_cli osd dump 2>/dev/null | grep -q '^osd\.0 up '
}

gateway_answers() {
    python3 - "$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=5) as response:
    sys.exit(0 if response.status == 200 else 1)
EOF
}

make_user() {
    local uid=$1 access=$2 secret=$3
    timeout 60 radosgw-admin -c "$CONF" -n client.rgw.a user create --uid "$uid" \
        --display-name "file_storage $uid" --access-key "$access" --secret-key "$secret" \
        >>"$DIR/log/users.out" 2>&1 || die "radosgw-admin could not create user $uid"
}

cmd_stop() {
    [ -d "$DIR/pids" ] || return 0
    local name file pid
    # the gateway first, the monitor last: clients go before the cluster does
    for name in rgw osd mon; do
        file=$DIR/pids/$name
        [ -e "$file" ] || continue
        if ours "$file"; then
            pid=$(cat "$file")
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$((SECONDS + STOP_TIMEOUT))
            while ours "$file" && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.2
            done
            if ours "$file"; then
                log "$name (pid $pid) did not exit in ${STOP_TIMEOUT}s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
                while ours "$file"; do sleep 0.1; done
            fi
        fi
        rm -f "$file"
    done
}

cmd_clean() {
    cmd_stop
    rm -rf "$DIR"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    *)
        echo "usage: $0 install|start|stop|clean  (directory: \$CEPH_RGW_DIR, now $DIR)" >&2
        exit 2
        ;;
esac
