#!/usr/bin/env bash
# Checks packaging/: the systemd units (systemd-analyze verify, and the
# coordinator's hardening score), sysusers.d and tmpfiles.d applied to a
# temporary root, the example configurations (cargo test), and -- when
# cargo-deb is installed -- the three .deb packages: contents, control
# fields, maintainer scripts, and that all three unpack side by side into a
# temporary dpkg root. Nothing is installed on this machine but the
# 'systemd' package (for systemd-analyze) when it is missing.
#
#   tests/packaging.sh            # prints 'N passed, N failed, N skipped'
#
# OI_PACKAGING_DEBS=0 skips the .deb part; OI_PACKAGING_CARGO_TEST=0 skips
# the example-config tests.
# shellcheck disable=SC2016 # the bash -c snippets get their values as "$1"..., on purpose
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKG=$ROOT/packaging
pass=0 fail=0 skip=0

ok() { echo "ok   - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
skipped() { echo "skip - $*"; skip=$((skip + 1)); }
check() { # check DESCRIPTION CMD...  (CMD's output shown only on failure)
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$what"
	else
		bad "$what"
		[[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/       /'
	fi
}
silent() { # silent CMD...: succeeds when CMD succeeds and prints nothing
	local out
	out=$("$@" 2>&1) || { printf '%s\n' "$out"; return 1; }
	[[ -z $out ]] || { printf 'unexpected output:\n%s\n' "$out"; return 1; }
}

work=$(mktemp -d "${TMPDIR:-/tmp}/oi-packaging.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! command -v systemd-analyze >/dev/null; then
	[[ $(id -u) == 0 ]] || { echo "packaging.sh: systemd-analyze missing; install the 'systemd' package" >&2; exit 1; }
	echo "packaging.sh: installing systemd (for systemd-analyze)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
fi

# --- units. 'systemd-analyze verify' checks that ExecStart= is executable
# and that the units it depends on exist. Against the real / it would need
# /usr/bin/oi-agent installed, so it runs against a temporary root
# (--root) holding this machine's units (targets, containerd.service), our
# two units, and stub executables at the ExecStart= paths. Warnings (unknown
# keys, bad values) do not change its exit code, so any output is a failure.
units=$work/units
mkdir -p "$units/usr/lib/systemd/system" "$units/usr/bin" "$units/etc"
cp -a /usr/lib/systemd/system/. "$units/usr/lib/systemd/system/"
cp "$PKG"/systemd/*.service "$units/usr/lib/systemd/system/"
for u in "$PKG"/systemd/*.service; do
	exe=$(awk -F'[= ]' '/^ExecStart=/ {print $2}' "$u")
	check "$(basename "$u"): ExecStart= is $exe under /usr/bin (where the .deb puts it)" \
		test "${exe%/*}" = /usr/bin
	printf '#!/bin/sh\nexit 0\n' >"$units$exe"
	chmod 0755 "$units$exe"
done
check "systemd-analyze verify: both units, no warning" \
	silent systemd-analyze verify --root="$units" oi-agent.service oi-coordinator.service
prop() { # prop UNIT KEY: the value of KEY= in our unit file (last wins)
	awk -F= -v k="$2" '$1 == k {v = substr($0, length(k) + 2)} END {print v}' "$PKG/systemd/$1"
}
check "both units are Type=notify" test "$(prop oi-agent.service Type)$(prop oi-coordinator.service Type)" = notifynotify
check "agent: KillMode=control-group (containers are not in its cgroup)" test "$(prop oi-agent.service KillMode)" = control-group
check "agent: after and wants containerd.service" bash -c \
	'[[ " $1 " == *" containerd.service "* && " $2 " == *" containerd.service "* ]]' _ \
	"$(prop oi-agent.service After)" "$(prop oi-agent.service Wants)"
check "agent: runs as root (no User=)" test -z "$(prop oi-agent.service User)"
check "coordinator: User=oneinfra, StateDirectory=oneinfra/coordinator" \
	test "$(prop oi-coordinator.service User) $(prop oi-coordinator.service StateDirectory)" = "oneinfra oneinfra/coordinator"
# exposure as systemd-analyze prints it (0.0 best .. 10.0 worst); the
# threshold is on its 0..100 scale
out=$(systemd-analyze security --offline=yes --root="$units" oi-coordinator.service 2>&1 || true)
level=$(awk '/Overall exposure level/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) print $i}' <<<"$out")
check "coordinator hardening: exposure ${level:-?} <= 2.0" \
	systemd-analyze security --offline=yes --root="$units" --threshold=20 oi-coordinator.service

# --- sysusers.d and tmpfiles.d, applied to a temporary root (files must be
# inside the root, named by basename)
r=$work/root
mkdir -p "$r/etc" "$r/usr/lib/sysusers.d" "$r/usr/lib/tmpfiles.d"
cp "$PKG/sysusers.d/oneinfra.conf" "$r/usr/lib/sysusers.d/"
cp "$PKG"/tmpfiles.d/*.conf "$r/usr/lib/tmpfiles.d/"
check "systemd-sysusers creates user and group oneinfra" systemd-sysusers --root="$r" oneinfra.conf
uid=$(awk -F: '$1 == "oneinfra" {print $3}' "$r/etc/passwd" 2>/dev/null || true)
check "oneinfra is a system user with no login shell" bash -c \
	'grep -q "^oneinfra:x:$1:$1:oneinfra coordinator:/var/lib/oneinfra/coordinator:/usr/sbin/nologin$" "$2"' _ "${uid:-x}" "$r/etc/passwd"
check "systemd-tmpfiles --create, no warning" \
	silent systemd-tmpfiles --root="$r" --create oi-agent.conf oi-coordinator.conf
mode() { stat -c '%a %u:%g' "$r$1" 2>&1; }
check "/etc/oneinfra 755 root" test "$(mode /etc/oneinfra)" = "755 0:0"
check "/etc/oneinfra/agent 700 root" test "$(mode /etc/oneinfra/agent)" = "700 0:0"
check "/var/lib/oneinfra/agent 700 root" test "$(mode /var/lib/oneinfra/agent)" = "700 0:0"
check "/var/lib/oneinfra/coordinator 700 oneinfra" test "$(mode /var/lib/oneinfra/coordinator)" = "700 $uid:$uid"
check "tmpfiles.d: no path in both packages' files" bash -c \
	'! awk "/^[a-zA-Z]/ {print \$2}" "$@" | sort | uniq -d | grep .' _ "$PKG"/tmpfiles.d/*.conf

# --- example configurations: loaded by the real config code
if [[ ${OI_PACKAGING_CARGO_TEST:-1} == 1 ]]; then
	check "example configs load and document every key (cargo test)" \
		bash -c "cd '$ROOT' && cargo test --quiet -p oi-tests --test packaging_examples"
else
	skipped "example configs (OI_PACKAGING_CARGO_TEST=0)"
fi

# --- the .deb packages
if [[ ${OI_PACKAGING_DEBS:-1} != 1 ]]; then
	skipped ".deb packages (OI_PACKAGING_DEBS=0)"
elif ! cargo deb --version >/dev/null 2>&1; then
	skipped ".deb packages (no cargo-deb; cargo install cargo-deb --locked)"
else
	debs=$work/debs
	mkdir -p "$debs"
	# builds the release binaries when they are missing or stale
	check "cargo deb -p oi-agent" bash -c "cd '$ROOT' && cargo deb --quiet -p oi-agent --output '$debs/agent.deb'"
	check "cargo deb -p oi-coordinator" bash -c "cd '$ROOT' && cargo deb --quiet -p oi-coordinator --output '$debs/coordinator.deb'"
	check "cargo deb -p oi-cli" bash -c "cd '$ROOT' && cargo deb --quiet -p oi-cli --output '$debs/cli.deb'"
	files() { dpkg-deb -c "$1" | awk '$1 !~ /^d/ {sub(/^\.\//, "", $6); print $6}' | sort; }
	expect() { # expect DEB FILE...: exactly these files (not directories)
		local deb=$1 got want
		shift
		got=$(files "$deb")
		want=$(printf '%s\n' "$@" | sort)
		[[ $got == "$want" ]] || { diff <(echo "$want") <(echo "$got"); return 1; }
	}
	check "oneinfra-agent files" expect "$debs/agent.deb" \
		usr/bin/oi-agent usr/lib/systemd/system/oi-agent.service \
		usr/lib/tmpfiles.d/oi-agent.conf usr/share/doc/oneinfra-agent/examples/agent.toml \
		usr/share/doc/oneinfra-agent/copyright
	check "oneinfra-coordinator files" expect "$debs/coordinator.deb" \
		usr/bin/oi-coordinator usr/lib/systemd/system/oi-coordinator.service \
		usr/lib/sysusers.d/oneinfra.conf usr/lib/tmpfiles.d/oi-coordinator.conf \
		usr/lib/sysctl.d/60-oi-coordinator.conf etc/oneinfra/coordinator.toml usr/share/doc/oneinfra-coordinator/copyright
	check "oneinfra-cli files" expect "$debs/cli.deb" usr/bin/oi usr/share/doc/oneinfra-cli/copyright
	field() { dpkg-deb -f "$1" "$2"; }
	check "package names" test "$(field "$debs/agent.deb" Package) $(field "$debs/coordinator.deb" Package) $(field "$debs/cli.deb" Package)" = \
		"oneinfra-agent oneinfra-coordinator oneinfra-cli"
	check "agent and coordinator depend on libc6 (\$auto)" bash -c \
		'[[ $(dpkg-deb -f "$1" Depends) == *libc6* && $(dpkg-deb -f "$2" Depends) == *libc6* ]]' _ "$debs/agent.deb" "$debs/coordinator.deb"
	check "agent recommends containerd and oneinfra-cli" bash -c \
		'[[ $(dpkg-deb -f "$1" Recommends) == *containerd* && $(dpkg-deb -f "$1" Recommends) == *oneinfra-cli* ]]' _ "$debs/agent.deb"
	check "oneinfra-cli recommends nothing" test -z "$(field "$debs/cli.deb" Recommends)"
	ctl() { dpkg-deb --ctrl-tarfile "$1" | tar -xO "./$2" 2>/dev/null; }
	check "coordinator.toml is a conffile" grep -qx /etc/oneinfra/coordinator.toml <(ctl "$debs/coordinator.deb" conffiles)
	check "coordinator postinst: sysusers, then tmpfiles, enable + start" bash -c '
		p=$1
		s=$(grep -n "systemd-sysusers.* oneinfra.conf" <<<"$p" | cut -d: -f1)
		t=$(grep -n "systemd-tmpfiles --create oi-coordinator.conf" <<<"$p" | cut -d: -f1)
		[[ -n $s && -n $t && $s -lt $t ]] &&
		grep -q "deb-systemd-helper enable oi-coordinator.service" <<<"$p" &&
		grep -q "deb-systemd-invoke \$_dh_action oi-coordinator.service" <<<"$p"' _ "$(ctl "$debs/coordinator.deb" postinst)"
	check "agent postinst: tmpfiles, enable + start, no sysusers" bash -c '
		p=$1
		grep -q "systemd-tmpfiles --create oi-agent.conf" <<<"$p" &&
		grep -q "deb-systemd-helper enable oi-agent.service" <<<"$p" &&
		! grep -q sysusers <<<"$p"' _ "$(ctl "$debs/agent.deb" postinst)"
	check "agent prerm stops oi-agent only on remove (not on upgrade)" bash -c \
		'grep -q "\"\$1\" = remove" <<<"$1" && grep -q "deb-systemd-invoke stop oi-agent.service" <<<"$1"' _ "$(ctl "$debs/agent.deb" prerm)"
	check "oneinfra-cli has no maintainer scripts" bash -c \
		'! dpkg-deb --ctrl-tarfile "$1" | tar -t | grep -qE "(postinst|prerm|postrm|preinst)$"' _ "$debs/cli.deb"
	check "binaries in the packages are x86-64/ELF executables" bash -c '
		for d in "$@"; do x=$(mktemp -d); dpkg-deb -x "$d" "$x"; for b in "$x"/usr/bin/*; do
			file -b "$b" | grep -q "^ELF 64-bit LSB pie executable" || { echo "$d: $b: $(file -b "$b")"; exit 1; }; done; rm -rf "$x"; done' _ \
		"$debs/agent.deb" "$debs/coordinator.deb" "$debs/cli.deb"
	# all three into one (empty) dpkg database: dpkg refuses files owned by
	# two packages. --unpack runs only preinst, which none of them has.
	db=$work/dpkgroot
	mkdir -p "$db/var/lib/dpkg/info" "$db/var/lib/dpkg/updates"
	: >"$db/var/lib/dpkg/status"
	check "the three packages unpack side by side (dpkg --root, no file conflict)" \
		dpkg --root="$db" --force-depends --force-script-chrootless --log=/dev/null \
		--unpack "$debs/agent.deb" "$debs/coordinator.deb" "$debs/cli.deb"
	for f in "$debs"/*.deb; do
		echo "#    $(basename "$f"): $(($(stat -c %s "$f") / 1024)) KiB; $(dpkg-deb -c "$f" | awk '$1 !~ /^d/' | wc -l) files"
	done
fi

echo "$pass passed, $fail failed, $skip skipped"
[[ $fail -eq 0 ]]
