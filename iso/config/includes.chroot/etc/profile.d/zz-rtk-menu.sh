# Start the Recovery Toolkit menu on tty1 and on serial consoles.
# Other consoles (Alt+F2...) stay plain root shells. A shell opened from the
# menu sets RTK_IN_MENU so it does not start a second menu. After an unattended
# run with rtk.done=shell, the consoles stay plain root shells.
if [ -z "${RTK_IN_MENU:-}" ] && [ -t 0 ]; then
    case "$(tty)" in
        /dev/tty1|/dev/ttyS[0-9]*|/dev/ttyAMA[0-9]*|/dev/ttyUSB[0-9]*|/dev/hvc[0-9]*)
            if grep -qs '"action": "shell"' /run/rtk/unattended-console.json; then
                echo "The unattended run is over (rtk.done=shell). 'rtk-menu' starts the menu."
            else
                exec /usr/local/sbin/rtk-console
            fi ;;
    esac
fi
