#!/bin/sh
# server-manager demo role container -- NOT Contrail.
# Reads the role file server-manager wrote (/etc/contrailctl/<role>.conf),
# logs every value it read to /var/log/<role>.log (the host's logDir is
# mounted at /var/log, so `server-manager logs SERVER --file <role>.log`
# shows it), then keeps running until stopped.
role="$1"
conf="/etc/contrailctl/$role.conf"
log="/var/log/$role.log"

say() {
    echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') demo-$role: $*" >> "$log"
}

say "started: server-manager demo image (not Contrail), reading $conf"
if [ -r "$conf" ]; then
    section=""
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            "["*"]")
                section="${line#[}"
                section="${section%]}"
                ;;
            " "*)
                say "read   ${line#    }"
                ;;
            *" = "*)
                say "read $section.${line%% = *} = ${line#* = }"
                ;;
        esac
    done < "$conf"
    say "read $(grep -c ' = ' "$conf") values; running"
else
    say "cannot read $conf"
fi

trap 'say "stopping"; exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $!
done
