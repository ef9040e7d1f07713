# Start the Recovery Toolkit menu on tty1 and on serial consoles.
# Other consoles (Alt+F2...) stay plain root shells. A shell opened from the
# menu sets RTK_IN_MENU so it does not start a second menu.
if [ -z "${RTK_IN_MENU:-}" ] && [ -t 0 ]; then
    case "$(tty)" in
        /dev/tty1|/dev/ttyS[0-9]*|/dev/ttyAMA[0-9]*|/dev/hvc[0-9]*)
            exec /usr/local/sbin/rtk-console ;;
    esac
fi
