# bash completion for mirrorfs-ctl: the verbs, then the names of the
# instances (/etc/mirrorfs/NAME.env, or $MIRRORFS_CONF_DIR). The verbs are
# read from the wrapper's own usage line, so that they cannot drift.

_mirrorfs_ctl_verbs() {
	local usage
	usage=$("${1:-mirrorfs-ctl}" 2>&1 >/dev/null)
	usage=${usage#usage: mirrorfs-ctl }
	usage=${usage%% *}
	printf '%s\n' "${usage//|/ }"
}

_mirrorfs_ctl() {
	local cur=${COMP_WORDS[COMP_CWORD]} dir=${MIRRORFS_CONF_DIR:-/etc/mirrorfs} f names=()
	COMPREPLY=()
	case $COMP_CWORD in
	1)
		mapfile -t COMPREPLY < <(compgen -W "$(_mirrorfs_ctl_verbs "${COMP_WORDS[0]}")" -- "$cur")
		;;
	2)
		for f in "$dir"/*.env; do
			[ -e "$f" ] || continue
			f=${f##*/}
			names+=("${f%.env}")
		done
		mapfile -t COMPREPLY < <(compgen -W "${names[*]}" -- "$cur")
		;;
	esac
}

complete -F _mirrorfs_ctl mirrorfs-ctl
