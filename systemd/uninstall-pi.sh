#!/usr/bin/env bash
# uninstall-pi.sh: remove what systemd/install-pi.sh installed.
#
# By default the footage, the state (pending requests, audit log, outbox) and the
# device keys in /var/lib/doorbell, the config in /etc/doorbell and the `doorbell` user
# that owns them are kept, so a reinstall picks up where it stopped and the owner's app
# stays paired. --purge deletes them too; that cannot be undone.
set -euo pipefail

readonly VENV=/opt/doorbell
readonly SERVICE=doorbell.service
readonly UNIT_FILE=/etc/systemd/system/doorbell.service

usage() {
    cat <<'EOF'
Usage: sudo systemd/uninstall-pi.sh [--purge]

Stops and disables the doorbell service and removes its unit and /opt/doorbell.
Keeps /var/lib/doorbell (footage, state, device keys), /etc/doorbell and the
`doorbell` user unless --purge is given.

  --purge     also delete /var/lib/doorbell, /etc/doorbell and the doorbell user
              (the device keys go with them: the owner's app must pair again)
  -h, --help  show this help
EOF
}

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'uninstall-pi.sh: error: %s\n' "$*" >&2
    exit 1
}

purge=0
while (($# > 0)); do
    case "$1" in
        --purge) purge=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            printf 'uninstall-pi.sh: unknown option: %s\n' "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

[[ $EUID -eq 0 ]] || die "run as root: sudo $0"

# --- service -----------------------------------------------------------------------------
if systemctl cat "$SERVICE" >/dev/null 2>&1; then
    say "stopping and disabling $SERVICE"
    systemctl disable --now --quiet "$SERVICE" || true
else
    say "$SERVICE is not installed"
fi
if [[ -e $UNIT_FILE ]]; then
    rm -f "$UNIT_FILE"
    say "removed $UNIT_FILE"
fi
systemctl daemon-reload
systemctl reset-failed "$SERVICE" 2>/dev/null || true

# --- program -----------------------------------------------------------------------------
if [[ -d $VENV ]]; then
    # Refuse to delete a directory that is not the venv this project made.
    [[ -f $VENV/pyvenv.cfg ]] || die "$VENV is not a Python venv; not removing it"
    rm -rf "$VENV"
    say "removed $VENV"
fi

# --- data, config, user ------------------------------------------------------------------
if ((purge)); then
    say "purging footage, state, device keys and config"
    rm -rf /var/lib/doorbell /etc/doorbell
    rm -f /etc/tmpfiles.d/doorbell.conf /etc/sysusers.d/doorbell.conf
    if getent passwd doorbell >/dev/null; then
        userdel doorbell
        say "removed user doorbell"
    fi
    if getent group doorbell >/dev/null; then
        groupdel doorbell
    fi
    # The gpio group stays: other programs on the Pi use it.
    say "purged"
else
    cat <<'EOF'
==> Kept /var/lib/doorbell (footage, state, device keys), /etc/doorbell and the
    doorbell user. Run with --purge to delete them as well.
EOF
fi
