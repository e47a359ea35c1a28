#!/usr/bin/env bash
# Runs the SDKs' quickstarts as a new user would (plugin-sdk/README.md for
# Rust, plugin-sdk/python/README.md for Python): every
# `<!-- quickstart:run -->` block is executed in order, every
# `<!-- quickstart:file F -->` / `quickstart:append F` block is written to F,
# in a fresh directory, against this checkout. Fails if any command fails,
# or if the rule raises no alert on the fixture; says how long each took.
set -euo pipefail
cd "$(dirname "$0")/.."
export VIGIL="$PWD"

quickstart() { # README expected-rule-id
    local readme=$1 rule=$2 work start
    work=$(mktemp -d)
    start=$(date +%s)

    python3 - "$VIGIL/$readme" "$work/steps.sh" <<'PY'
import re, sys, shlex
text = open(sys.argv[1]).read()
steps = ["set -euxo pipefail"]
for m in re.finditer(r"<!-- quickstart:(run|file|append) ?([^ ]*) -->\n```[a-z]*\n(.*?)```", text, re.S):
    kind, name, body = m.groups()
    if kind == "run":
        steps.append(body)
    else:
        op = ">" if kind == "file" else ">>"
        steps.append(f"mkdir -p $(dirname {shlex.quote(name)}) && cat {op} {shlex.quote(name)} <<'QUICKSTART_EOF'\n{body}QUICKSTART_EOF")
if len(steps) < 6:
    sys.exit("quickstart: expected more steps in the README")
open(sys.argv[2], "w").write("\n".join(steps) + "\n")
PY
    if ! (cd "$work" && bash steps.sh >"$work/log" 2>&1); then
        tail -40 "$work/log"
        echo "quickstart: $readme FAILED (see above)"
        rm -rf "$work"
        return 1
    fi
    if ! grep -q "\"rule\":\"$rule\"" "$work/log"; then
        tail -20 "$work/log"
        echo "quickstart: $readme: the rule raised no alert on the fixture"
        rm -rf "$work"
        return 1
    fi
    rm -rf "$work"
    echo "quickstart: $readme ran as written in $(($(date +%s) - start)) s"
}

quickstart plugin-sdk/README.md curl-in-container
quickstart plugin-sdk/python/README.md curl-in-container
