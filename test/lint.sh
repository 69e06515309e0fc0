#!/usr/bin/env bash
# test/lint.sh: the runner behind "make lint" and "make format-check".
# Owns: static analysis of src/*.c (cppcheck; the clang static analyzer
# through scan-build), shellcheck over every shell script of the repository,
# and the check that src/*.c and src/*.h are laid out as pgindent lays
# them out (pg_bsd_indent, PostgreSQL's own indenter, with pgindent's
# options), and the SQL conventions of the extension's SQL
# (test/lint_sql.py: a pinned search_path on every function, every call
# qualified), and the Perl of the TAP tests (perl -cw and perlcritic with
# test/perlcriticrc).  Prints one line per tool, "lint: TOOL: ok" or
# "lint: TOOL: N findings" after the findings themselves, and exits
# non-zero on any finding.  Suppressions live next to the code they excuse,
# each with its reason ("cppcheck-suppress", "shellcheck disable=").
# Usage: test/lint.sh [cppcheck|scan-build|shellcheck|format|sql|perl ...]  (default: all)
set -euo pipefail
shopt -s inherit_errexit nullglob

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OMS_PACKAGES+=(cppcheck clang clang-tools shellcheck pg-bsd-indent libperl-critic-perl)
oms_ensure_packages

cd "$OMS_ROOT"
LINT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/oms-lint.XXXXXX")
# shellcheck disable=SC2016 # expanded when the exit hook runs
oms_on_exit 'rm -rf "$LINT_TMP"'

PG_INCLUDE=$("$PG_CONFIG" --includedir-server)
C_FILES=(src/*.c)
# The compiler's view of the sources, as the Makefile builds them.  The
# server headers are system headers here: their warnings are not ours.
C_FLAGS=(-DOMS_VERSION='"lint"' -D_GNU_SOURCE -I src -isystem "$PG_INCLUDE")
FAILED=0

verdict() {
	local tool=$1 n=$2
	if ((n == 0)); then
		printf 'lint: %s: ok\n' "$tool"
	else
		printf 'lint: %s: %d findings\n' "$tool" "$n"
		FAILED=1
	fi
}

run_cppcheck() {
	local out=$LINT_TMP/cppcheck.txt
	# Every check but "information" (missing system headers and the like);
	# the server headers are read so that the macros (PG_TRY, ereport,
	# list_make*) are understood.  "unusedFunction" needs one job.
	cppcheck -q -j2 --enable=warning,style,performance,portability --std=c99 \
		--inline-suppr --error-exitcode=0 --suppress=missingIncludeSystem \
		-DOMS_VERSION='"lint"' -D__GNUC__ -I src -I "$PG_INCLUDE" \
		--template='{file}:{line}: {severity} [{id}] {message}' \
		"${C_FILES[@]}" >"$out" 2>&1
	cat "$out"
	verdict cppcheck "$(grep -c '^src/' "$out" || true)"
}

run_scan_build() {
	local out=$LINT_TMP/scan-build.txt f n
	# Each file compiled alone into the scratch directory, so the tree's
	# objects (and a coverage build) are left alone.  scan-build puts its
	# compiler wrapper in $CC for the command it runs.
	# shellcheck disable=SC2016 # $CC and the rest are the inner shell's
	LINT_CFLAGS="${C_FLAGS[*]}" LINT_OUT=$LINT_TMP scan-build --status-bugs \
		-o "$LINT_TMP/scan-build" --use-cc=clang bash -c '
			for f in src/*.c; do
				# shellcheck disable=SC2086 # the flags are words
				"$CC" -c -O0 $LINT_CFLAGS "$f" -o "$LINT_OUT/$(basename "$f" .c).o" || exit 1
			done' >"$out" 2>&1 || true
	n=$(sed -n 's/^scan-build: \([0-9][0-9]*\) bugs\? found\.$/\1/p' "$out")
	if [[ -z "$n" ]]; then
		if grep -q '^scan-build: No bugs found' "$out"; then
			n=0
		else
			cat "$out"
			n=1
		fi
	fi
	if ((n > 0)); then
		for f in "$LINT_TMP"/scan-build/*/report-*.html; do
			sed -n 's/^<!-- BUG\(FILE\|LINE\|DESC\) \(.*\) -->$/\2/p' "$f" | paste -sd'|' |
				awk -F'|' -v root="$OMS_ROOT/" '{ sub(root, "", $2); print $2 ":" $3 ": " $1 }'
		done
	fi
	verdict scan-build "$n"
}

# Every shell script: *.sh and the scripts without an extension whose first
# line names a shell (.ci/run).  Run from the root so that "shellcheck
# source=test/lib.sh" directives resolve.
run_shellcheck() {
	local out=$LINT_TMP/shellcheck.txt f scripts=()
	while IFS= read -r -d '' f; do
		case $f in
		*.sh) scripts+=("$f") ;;
		*) head -n 1 "$f" | grep -qE '^#!.*\b(ba)?sh\b' && scripts+=("$f") ;;
		esac
	done < <(find . -name .git -prune -o -name log -prune -o -type f ! -name '*.*' -print0 -o -type f -name '*.sh' -print0)
	shellcheck -x -f gcc "${scripts[@]}" >"$out" 2>&1 || true
	cat "$out"
	verdict "shellcheck (${#scripts[@]} scripts)" "$(grep -c ':[0-9]*:[0-9]*: ' "$out" || true)"
}

# pgindent's typedef list comes from a build of PostgreSQL; here it is read
# off the server headers, librdkafka's and ours: every name a typedef
# declares.  "text" is left out: it is PostgreSQL's varlena type, but also
# a common name for a char * here, and a typedef name as a variable makes
# pg_bsd_indent lay out "text + n" as a cast.
typedef_list() {
	{
		cat "$PG_INCLUDE"/*.h "$PG_INCLUDE"/*/*.h /usr/include/librdkafka/*.h src/*.h src/*.c |
			grep -oE '^\}\s*[A-Za-z_][A-Za-z0-9_]*\s*;|^typedef\s[^;(]*\b[A-Za-z_][A-Za-z0-9_]*\s*;|^typedef\s[^;]*\(\s*\*\s*[A-Za-z_][A-Za-z0-9_]*\s*\)' |
			grep -oE '[A-Za-z_][A-Za-z0-9_]*\s*;?\)?$' | tr -d ' ;)'
		printf '%s\n' FILE size_t ssize_t pid_t va_list int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t
	} | grep -vx 'text' | sort -u
}

run_format() {
	local out=$LINT_TMP/format.txt f n=0
	typedef_list >"$LINT_TMP/typedefs"
	: >"$out"
	for f in "${C_FILES[@]}" src/*.h; do
		# The options of PostgreSQL's src/tools/pgindent/pgindent.
		pg_bsd_indent -bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4 -l79 \
			-lp -lpl -nip -npro -sac -tpg -ts4 -U"$LINT_TMP/typedefs" "$f" "$LINT_TMP/indented" 2>>"$out"
		if ! diff -u --label "$f" --label "$f (pgindent)" "$f" "$LINT_TMP/indented" >>"$out"; then
			n=$((n + 1))
		fi
	done
	cat "$out"
	verdict "format (pg_bsd_indent, files to reformat)" "$n"
}

# The fragments of the extension script and the upgrade script to the
# version under development; released scripts stay as they shipped.
run_sql() {
	local out=$LINT_TMP/sql.txt version n files
	version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" oms.control)
	files=(src/sql/*.sql src/sql/versions/oms--*--"$version".sql src/router/*.sql)
	if python3 test/lint_sql.py "${files[@]}" >"$out" 2>&1; then
		n=0
	else
		n=$(grep -c '^src/' "$out" || true)
		((n > 0)) || n=1
	fi
	cat "$out"
	verdict "sql (${#files[@]} files)" "$n"
}

# The TAP tests and their modules: each compiles with warnings on (against
# PostgreSQL's test modules, as test/tap.sh runs them), and perlcritic
# finds nothing at the level test/perlcriticrc sets.
run_perl() {
	local out=$LINT_TMP/perl.txt f n=0 pg_perl files
	pg_perl=$(cd "$(dirname "$("$PG_CONFIG" --pgxs)")/../test/perl" && pwd)
	files=(test/t/*.pl test/perl/*.pm)
	: >"$out"
	for f in "${files[@]}"; do
		if ! perl -cw -I "$pg_perl" -I test/perl "$f" >"$LINT_TMP/perl-c.txt" 2>&1 ||
			grep -qv 'syntax OK$' "$LINT_TMP/perl-c.txt"; then
			cat "$LINT_TMP/perl-c.txt" >>"$out"
			n=$((n + 1))
		fi
	done
	if ! perlcritic --quiet --profile test/perlcriticrc "${files[@]}" >>"$out" 2>&1; then
		n=$((n + $(grep -c '(Severity: ' "$out" || true)))
		((n > 0)) || n=1
	fi
	cat "$out"
	verdict "perl (${#files[@]} files)" "$n"
}

(($#)) || set -- cppcheck scan-build shellcheck format sql perl
for tool in "$@"; do
	case $tool in
	cppcheck) run_cppcheck ;;
	scan-build) run_scan_build ;;
	shellcheck) run_shellcheck ;;
	format) run_format ;;
	sql) run_sql ;;
	perl) run_perl ;;
	*) oms_die "unknown tool '$tool' (cppcheck, scan-build, shellcheck, format, sql, perl)" ;;
	esac
done
exit "$FAILED"
