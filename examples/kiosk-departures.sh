#!/bin/sh
# Every boot: show the public-transport departure board full screen on the HDMI
# display, as the unprivileged kiosk user, in a Wayland kiosk compositor (cage).
url="https://dbf.finalrewind.org/Berlin%20Hbf?mode=infoscreen"
uid=$(id -u kiosk)
runtime="/run/user/$uid"
mkdir -p "$runtime"
chown kiosk:kiosk "$runtime"
chmod 0700 "$runtime"
# Wait (up to a minute) for the network and a plausible clock, so TLS works.
i=0
while [ "$i" -lt 60 ] && ! wget -q --spider "$url"; do
	sleep 1
	i=$((i + 1))
done
su -s /bin/sh kiosk -c "XDG_RUNTIME_DIR=$runtime LIBSEAT_BACKEND=seatd cage -s -- chromium-browser --kiosk --noerrdialogs --disable-infobars --no-first-run '$url'" \
	>/var/log/kiosk.log 2>&1 &
