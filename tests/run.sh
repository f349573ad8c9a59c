#!/bin/bash
# tests/run.sh — build mxgate out of tree and run every test.
#
#     tests/run.sh                 build in build/, run unit + integration tests
#     tests/run.sh --sanitizers    the same with ASan/UBSan, in build-asan/
#
# Extra arguments after "--" go to pytest (e.g. tests/run.sh -- -k smuggling);
# naming test files runs only those (tests/run.sh -- tests/integration/test_dsn.py).
# The environment variable JOBS sets make's parallelism (default 2).
#
# Steps: ./autogen.sh when configure is missing, configure into the build
# directory (once), make, run the C unit tests (tests/unit/test_*, TAP
# output: "ok N" / "not ok N" lines are counted), replay the fuzzers' seed
# corpora (tests/fuzz, built with clang: one case per fuzzer), then the
# integration tests with pytest, MXGATED and MXGATECTL pointing at the fresh binaries.
# The last line printed is the total: "N passed, N failed[, N skipped]".
# Exit status 0 only when nothing failed (a build failure counts as one).

set -u

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

sanitizers=no
pytest_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--sanitizers) sanitizers=yes ;;
	--) shift; pytest_args=("$@"); break ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "usage: tests/run.sh [--sanitizers] [-- pytest args]" >&2; exit 2 ;;
	esac
	shift
done

passed=0
failed=0
skipped=0

summary() {
	local line="$passed passed, $failed failed"
	if [ "$skipped" -gt 0 ]; then line="$line, $skipped skipped"; fi
	echo "$line"
}

# A step that cannot go on (the build) counts as one failure.
give_up() {
	echo "run.sh: $*" >&2
	failed=$((failed + 1))
	summary
	exit 1
}

if [ "$sanitizers" = yes ]; then
	builddir="$top/build-asan"
	configure_args=(--enable-sanitizers)
else
	builddir="$top/build"
	configure_args=()
fi

echo "== build ($builddir)"
if [ ! -x "$top/configure" ]; then
	./autogen.sh || give_up "autogen.sh failed"
fi
if [ -f "$top/config.status" ]; then
	# automake refuses VPATH builds of a tree configured in place.
	give_up "$top is configured in place: run 'make distclean' there first"
fi
mkdir -p "$builddir" || give_up "cannot create $builddir"
if [ ! -f "$builddir/Makefile" ]; then
	(cd "$builddir" && "$top/configure" "${configure_args[@]}") \
		|| give_up "configure failed (see $builddir/config.log)"
fi
(cd "$builddir" && make -j"${JOBS:-2}") || give_up "build failed"
# "make check TESTS=" builds the unit test programs without running them:
# this script runs them itself to count their TAP lines.  If some do not
# build, that is one failure, and the rest of the tests still run.
if ! (cd "$builddir" && make -j"${JOBS:-2}" -k check TESTS=); then
	echo "run.sh: some unit test programs did not build" >&2
	failed=$((failed + 1))
fi

if [ "$sanitizers" = yes ]; then
	# Abort on the first UBSan finding too, and let the integration tests
	# find every report in the daemon's log.  Leak checking is off in the
	# daemon: its children switch user, which LeakSanitizer cannot follow.
	export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=0}"
	export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi

echo "== unit tests"
unit_found=0
for t in "$builddir"/tests/unit/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	case "$t" in *.o|*.c|*.log|*.trs) continue ;; esac
	unit_found=1
	name=$(basename "$t")
	# As under "make check": run in the build directory, with $srcdir set.
	out=$(cd "$builddir" && srcdir="$top" timeout 300 "$t" 2>&1)
	status=$?
	ok=$(printf '%s\n' "$out" | grep -cE '^ok [0-9]+')
	notok=$(printf '%s\n' "$out" | grep -cE '^not ok [0-9]+')
	plan=$(printf '%s\n' "$out" | sed -n 's/^1\.\.\([0-9][0-9]*\).*/\1/p' | tail -1)
	passed=$((passed + ok))
	failed=$((failed + notok))
	# A crash, or a plan that does not match what ran, is a failure too.
	if [ "$status" -ne 0 ] && [ "$notok" -eq 0 ]; then
		failed=$((failed + 1))
		echo "$name: exit status $status with no failed case (crash?)"
	elif [ -n "$plan" ] && [ "$plan" -ne $((ok + notok)) ]; then
		failed=$((failed + 1))
		echo "$name: plan 1..$plan but $((ok + notok)) cases ran"
	fi
	if [ "$notok" -gt 0 ] || [ "$status" -ne 0 ]; then
		printf '%s\n' "$out" | grep -vE '^ok [0-9]+' | sed "s/^/$name: /"
	fi
	echo "$name: $ok passed, $notok failed"
done
if [ "$unit_found" -eq 0 ]; then
	echo "no unit test programs in $builddir/tests/unit"
fi

# The fuzzers (libFuzzer, clang) replay their seed corpora: each must
# build and run every seed without a sanitizer report.  One case each.
echo "== fuzz corpus replay"
if command -v clang >/dev/null 2>&1; then
	fuzzdir="$builddir/fuzz"
	if ! tests/fuzz/build.sh "$fuzzdir" >"$builddir/fuzz-build.log" 2>&1; then
		failed=$((failed + 1))
		echo "fuzzers did not build:"
		tail -20 "$builddir/fuzz-build.log"
	else
		for corpus in tests/fuzz/corpus/*/; do
			name=$(basename "$corpus")
			bin="$fuzzdir/fuzz_$name"
			[ -x "$bin" ] || { failed=$((failed + 1)); echo "fuzz_$name: not built"; continue; }
			if out=$(timeout 300 "$bin" -runs=0 "$corpus" 2>&1); then
				passed=$((passed + 1))
				echo "fuzz_$name: $(ls "$corpus" | wc -l) seeds replayed"
			else
				failed=$((failed + 1))
				printf '%s\n' "$out" | tail -30 | sed "s/^/fuzz_$name: /"
			fi
		done
	fi
else
	echo "clang not installed: fuzzers skipped"
	skipped=$((skipped + 1))
fi

echo "== integration tests"
export MXGATED="$builddir/src/mxgated"
export MXGATECTL="$builddir/src/mxgatectl"
export PYTHONDONTWRITEBYTECODE=1
junit=$(mktemp /tmp/mxgate-junit.XXXXXX.xml)
# The whole suite, unless the arguments name test files or folders.
targets=(tests/integration)
for a in "${pytest_args[@]}"; do
	case "$a" in -*) continue ;; esac
	[ -e "${a%%::*}" ] && targets=()
done
/usr/bin/python3 -m pytest "${targets[@]}" -v -p no:cacheprovider \
	--junitxml="$junit" "${pytest_args[@]}"
pytest_status=$?

# Count from the JUnit report: errors (fixture failures) count as failed.
counts=$(/usr/bin/python3 - "$junit" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 0 0 0")
    sys.exit()
passed = failed = skipped = 0
for case in root.iter("testcase"):
    kinds = {child.tag for child in case}
    if kinds & {"failure", "error"}:
        failed += 1
    elif "skipped" in kinds:
        skipped += 1
    else:
        passed += 1
print(passed, failed, skipped, 1)
EOF
)
rm -f "$junit"
read -r n_pass n_fail n_skip have <<<"$counts"
passed=$((passed + n_pass))
failed=$((failed + n_fail))
skipped=$((skipped + n_skip))
# pytest status: 0 ok, 1 failures, 5 no tests; anything else (usage,
# internal error, interrupted) means the run itself broke.
case "$pytest_status" in
0|1|5) ;;
*) failed=$((failed + 1)); echo "pytest exited with status $pytest_status" ;;
esac
if [ "$have" != 1 ] && [ "$pytest_status" -ne 5 ]; then
	failed=$((failed + 1))
	echo "pytest wrote no report"
fi
if [ "$pytest_status" -eq 1 ] && [ "$n_fail" -eq 0 ]; then
	failed=$((failed + 1))
fi

summary
[ "$failed" -eq 0 ]
