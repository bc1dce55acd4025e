#!/bin/sh
# Add XVLM Chat to the desktop's application menu for the current user (menu entry and icons), or take it away.
#   ./install.sh                the built app this script sits in ("XVLM Chat/install.sh")
#   ./install.sh APP_FOLDER     the built app in APP_FOLDER (default from a source tree: dist/XVLM Chat)
#   ./install.sh --uninstall    remove the menu entry and the icons; chats, settings and models stay
# Needs no root: everything goes under ${XDG_DATA_HOME:-~/.local/share}. The menu entry points at the folder,
# so after moving the folder run this again.
set -eu

name=xvlm-chat
data="${XDG_DATA_HOME:-$HOME/.local/share}"
applications="$data/applications"
icons="$data/icons/hicolor"
here=$(cd "$(dirname "$0")" && pwd -P)

refresh() {
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$applications" || true
    fi
    # Only refresh a cache that exists: a new one would hide icons that later installs add without refreshing it.
    if [ -f "$icons/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
        gtk-update-icon-cache -q -t -f "$icons" 2>/dev/null || true
    fi
}

uninstall() {
    rm -f "$applications/$name.desktop"
    for icon in "$icons"/*/apps/"$name".png "$icons"/*/apps/"$name".svg; do
        if [ -e "$icon" ]; then rm -f "$icon"; fi
    done
    refresh
    echo "Removed XVLM Chat from the application menu. Your chats, settings and downloaded models were kept."
}

install() {
    app=$1
    if [ ! -x "$app/$name" ]; then
        echo "error: no XVLM Chat build in '$app' (expected the program '$app/$name')." >&2
        echo "Build it with 'python packaging/build.py', or pass the folder that holds $name." >&2
        exit 1
    fi
    app=$(cd "$app" && pwd -P)
    case $app in
        *'
'*) echo "error: the folder's path contains a line break; move it somewhere else first." >&2; exit 1 ;;
    esac
    template="$app/_internal/resources/$name.desktop.in"
    theme="$app/_internal/share/icons/hicolor"
    for needed in "$template" "$theme"; do
        if [ ! -e "$needed" ]; then
            echo "error: '$needed' is missing: this build is incomplete." >&2
            exit 1
        fi
    done

    # Exec takes a quoted argument: backslash, quote, backquote and dollar are escaped inside the quotes, then every
    # backslash is doubled again by the file's string escaping; % is doubled so it is not read as a field code.
    program="$app/$name"
    exec_arg=\"$(printf '%s' "$program" | sed -e 's/\\/\\\\\\\\/g' -e 's/["`$]/\\\\&/g' -e 's/%/%%/g')\"
    try_exec=$(printf '%s' "$program" | sed -e 's/\\/\\\\/g')

    mkdir -p "$applications"
    (cd "$theme" && find . -type f) | while IFS= read -r icon; do
        mkdir -p "$icons/$(dirname "$icon")"
        cp "$theme/$icon" "$icons/$icon"
    done
    EXEC_ARG=$exec_arg TRY_EXEC=$try_exec awk '
        function replace(line, key, value,    out, at) {
            out = ""
            while ((at = index(line, key)) > 0) {
                out = out substr(line, 1, at - 1) value
                line = substr(line, at + length(key))
            }
            return out line
        }
        { print replace(replace($0, "@EXEC@", ENVIRON["EXEC_ARG"]), "@TRYEXEC@", ENVIRON["TRY_EXEC"]) }
    ' "$template" > "$applications/$name.desktop.part"
    chmod 644 "$applications/$name.desktop.part"
    mv "$applications/$name.desktop.part" "$applications/$name.desktop"
    refresh
    echo "Added XVLM Chat to the application menu: $applications/$name.desktop -> $program"
}

case "${1:-}" in
    --uninstall) uninstall ;;
    -h|--help) sed -n '2,7s/^# \{0,1\}//p' "$0" ;;
    "")
        if [ -x "$here/$name" ]; then
            install "$here"
        else
            install "$here/../../dist/XVLM Chat"
        fi
        ;;
    -*) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) install "$1" ;;
esac
