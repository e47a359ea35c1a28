#!/usr/bin/env bash
# Runs plugin-sdk/README.md's quickstart as a new user would: every
# `<!-- quickstart:run -->` block is executed in order, every
# `<!-- quickstart:file F -->` / `quickstart:append F` block is written to F,
# in a fresh directory, against this checkout. Fails if any command fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export VIGIL="$PWD"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$VIGIL/plugin-sdk/README.md" "$work/steps.sh" <<'PY'
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
cd "$work"
bash steps.sh > "$work/log" 2>&1 || { tail -40 "$work/log"; echo "quickstart: FAILED (see above)"; exit 1; }
grep -q '"rule":"curl-in-container"' "$work/log" || { tail -20 "$work/log"; echo "quickstart: the rule raised no alert on the fixture"; exit 1; }
echo "quickstart: plugin-sdk/README.md ran as written: 1 passed, 0 failed"
