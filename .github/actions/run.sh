#!/usr/bin/env bash
# The shell of the softmax-suite GitHub Action (action.yml): `install`, `run` and `verdict`, one
# step each. Settings arrive as SUITE_* environment variables (action.yml maps the inputs to them),
# so that tests/test_action.py runs this very script outside GitHub.
set -euo pipefail

# The action's root, so that the installed softmax-suite is this action's version.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SUMMARY=${GITHUB_STEP_SUMMARY:-/dev/null}
OUTPUT=${GITHUB_OUTPUT:-/dev/null}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

die() {
  echo "::error title=softmax-suite action::$1"
  exit 2
}

# Split a setting as a POSIX shell would (quotes kept together), without eval: a value is never
# run as a command. The words go to $1 NUL-separated; a bad value is named with its fix.
split_words() {
  python - "$2" "$3" >"$1" <<'PY'
import shlex
import sys

name, value = sys.argv[1:]
try:
    words = shlex.split(value)
except ValueError as error:
    sys.exit(f"::error title=softmax-suite action::{name}: {error} in {value!r}; quote each word "
             "at most once, as in a shell command")
sys.stdout.write("".join(word + "\0" for word in words))
PY
}

step_install() {
  local spec=$ROOT words=$SCRATCH/pip-args pip_args=()
  if [[ -n ${SUITE_EXTRAS:-} ]]; then spec+="[${SUITE_EXTRAS// /}]"; fi
  split_words "$words" pip-args "${SUITE_PIP_ARGS:-}" || exit 2
  while IFS= read -r -d '' word; do pip_args+=("$word"); done <"$words"
  echo "+ python -m pip install $spec ${SUITE_PIP_ARGS:-}"
  python -m pip install "$spec" ${pip_args[@]+"${pip_args[@]}"}
  # pip only warns about an extra the package lacks; a backend missing from every run is worse.
  python - "${SUITE_EXTRAS// /}" <<'PY'
import sys
from importlib.metadata import metadata

known = metadata("softmax-suite").get_all("Provides-Extra") or []
unknown = [extra for extra in sys.argv[1].split(",") if extra and extra not in known]
if unknown:
    sys.exit(f"::error title=softmax-suite action::extras: softmax-suite has no extra {', '.join(unknown)}; "
             f"it has {', '.join(known)}")
PY
}

# A Markdown table of the results' statuses per check (accuracy, invariants, throughput).
status_table() {
  python - "$@" <<'PY'
import sys
import warnings
from collections import defaultdict

from softmax_suite.reports.results import STATUSES, ResultsFileError, read_results, status_counts

by_check = defaultdict(list)
for path in sys.argv[1:]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a truncated last line: the run's own log says so
        try:
            _, records = read_results(path)
        except ResultsFileError as error:
            print(f"{error}\n")
            continue
    for record in records:
        by_check[record.get("check") or "accuracy"].append(record)
if by_check:
    print("| check | " + " | ".join(STATUSES) + " |")
    print("|---|" + "---|" * len(STATUSES))
    for check, records in by_check.items():
        counts = status_counts(records)
        print(f"| {check} | " + " | ".join(str(counts[status]) for status in STATUSES) + " |")
else:
    print("No results were written: the log of the run step says why.")
PY
}

step_run() {
  local out=${SUITE_OUT-softmax-suite-out} baseline=${SUITE_BASELINE:-}
  local artifact=${SUITE_ARTIFACT:-softmax-suite-results} words=$SCRATCH/args code=0 missing=""
  local gate_summary=$SCRATCH/gate.md
  [[ -n $out ]] || die "out: empty; name the folder for the results, e.g. softmax-suite-out"
  command -v softmax-suite >/dev/null \
    || die "softmax-suite is not on PATH: install it into the python on PATH (the install step does)"
  local argv=(run --out "$out" --throughput "${SUITE_THROUGHPUT:-quick}")
  if [[ -n ${SUITE_BACKEND:-} ]]; then argv+=(--backend "$SUITE_BACKEND"); fi
  if [[ -n ${SUITE_DEVICE:-} ]]; then argv+=(--device "$SUITE_DEVICE"); fi
  if [[ -n $baseline && -f $baseline ]]; then
    argv+=(--baseline "$baseline")
  elif [[ -n $baseline ]]; then
    missing=$baseline
  fi
  split_words "$words" args "${SUITE_ARGS:-}" || exit 2
  while IFS= read -r -d '' word; do argv+=("$word"); done <"$words"

  if [[ -n $missing ]]; then
    echo "::warning title=softmax-suite: no baseline yet::$missing does not exist: this run is not gated." \
      "To make the first baseline, commit new-baseline.json of the artifact $artifact as $missing."
  fi
  # The gate's Markdown goes below this step's verdict, not above it.
  echo "+ softmax-suite ${argv[*]}"
  : >"$gate_summary"
  GITHUB_STEP_SUMMARY=$gate_summary softmax-suite "${argv[@]}" || code=$?

  local results=() new_baseline=""
  for file in results.jsonl throughput.jsonl; do
    if [[ -f $out/$file ]]; then results+=("$out/$file"); fi
  done
  # Every run whose files are complete offers itself as the next baseline: the first one, or
  # one that accepts an intended change. (A second timing, throughput-again.jsonl, would count
  # as a second run and widen the drift the gate allows.)
  if [[ ${#results[@]} -gt 0 ]] \
    && softmax-suite baseline save "${results[@]}" -o "$out/new-baseline.json"; then
    new_baseline=$out/new-baseline.json
  fi

  local verdict
  case $code in
    0) verdict="**passed**" ;;
    1) verdict="**failed** (exit 1: a check failed or a result regressed)" ;;
    2) verdict="**usage error** (exit 2: the log of the run step names it)" ;;
    *) verdict="**stopped** (exit $code)" ;;
  esac
  {
    echo "## softmax-suite: $verdict"
    echo
    status_table ${results[@]+"${results[@]}"}
    echo
    echo "The report (\`report.html\`) and the results are in the artifact \`$artifact\` of this run" \
      "(its summary page, under Artifacts)."
    echo
    if [[ -n $missing ]]; then
      echo "> **No baseline yet**: \`$missing\` does not exist, so this run was not gated."
      if [[ -n $new_baseline ]]; then
        echo "> To make the first one, download the artifact \`$artifact\` and commit its" \
          "\`new-baseline.json\` as \`$missing\`; from then on each run is gated against it."
      else
        echo "> This run left no complete results to make it from; fix what the log names and run again."
      fi
      if [[ $code -ne 0 && -n $new_baseline ]]; then
        echo "> This run failed: a baseline made from it accepts its failures. Fix them first."
      fi
      echo
    elif [[ -z $baseline ]]; then
      echo "Not gated: the action was given no \`baseline\`."
      echo
    fi
    cat "$gate_summary"
  } >>"$SUMMARY"
  {
    echo "results=$out"
    echo "report=$out/report.html"
    echo "new-baseline=$new_baseline"
    echo "exit-code=$code"
  } >>"$OUTPUT"
  echo "softmax-suite: exit $code; the report and results go to the artifact $artifact"
}

# After the upload: the link to the artifact, then the suite's own exit status as the step's.
step_verdict() {
  local code=${SUITE_EXIT_CODE:-}
  [[ $code =~ ^[0-9]+$ ]] || die "exit-code: '$code' is no exit status; the run step did not finish"
  if [[ -n ${SUITE_ARTIFACT_URL:-} ]]; then
    echo "[Download the report and results]($SUITE_ARTIFACT_URL)" >>"$SUMMARY"
  fi
  exit "$code"
}

case ${1:-} in
  install | run | verdict) "step_$1" ;;
  *) die "usage: $0 install|run|verdict (the step of action.yml to run)" ;;
esac
