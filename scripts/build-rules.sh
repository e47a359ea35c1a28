#!/usr/bin/env bash
# Builds every bundled rule (rules/*) and test fixture rule (tests/rules/*)
# to a WebAssembly component:
#   target/rules/<id>.wasm       the bundled rules (what `vigil run` loads), with
#                                the interpreter of rule files (declarative.wasm)
#   target/rules/*.yaml          the bundled rule files (rules/declarative/rules)
#   target/example-rules/<id>.wasm  Rust rules kept as examples (examples/rules),
#                                not bundled: the rule files now detect what they did
#   target/test-rules/<id>.wasm  fixtures for the end-to-end tests
# Bundled and example rules build for wasm32-unknown-unknown (no WASI: about
# 30 KB smaller, and they import nothing but vigil:rules; .cargo/config.toml
# links them into components); the test fixtures for wasm32-wasip2, the
# target rule authors start with, whose WASI imports the sandbox tests probe.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --profile rule --target wasm32-unknown-unknown -p 'vigil-rule-*' -p 'vigil-example-rule-*' "$@"
cargo build --profile rule --target wasm32-wasip2 -p 'vigil-test-rule-*' "$@"

mkdir -p "$target_dir/rules" "$target_dir/example-rules" "$target_dir/test-rules"
copy() { # crate-file-prefix destination-dir crates-dir cargo-output-dir
    for f in "$4"/"$1"*.wasm; do
        [ -e "$f" ] || continue
        name=$(basename "$f" .wasm)
        name=${name#"$1"}
        # Only crates that are still there (cargo's output keeps old ones).
        [ -d "$3/${name//_/-}" ] || continue
        # Without the component wrapper's name and producer sections (about
        # 4 KB: scripts/strip-wasm.py), to a temp name then renamed: a
        # running daemon watching the directory never sees a half-written file.
        python3 scripts/strip-wasm.py "$f" "$2/.$name.wasm.tmp" && mv -f "$2/.$name.wasm.tmp" "$2/${name//_/-}.wasm"
        built+=("$2/${name//_/-}.wasm")
    done
}
built=()
copy vigil_rule_ "$target_dir/rules" rules "$target_dir/wasm32-unknown-unknown/rule"
# The bundled rule files (Falco rules and a Sigma correlation), run by declarative.wasm.
for f in rules/declarative/rules/*.yaml; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    cp "$f" "$target_dir/rules/.$name.tmp" && mv -f "$target_dir/rules/.$name.tmp" "$target_dir/rules/$name"
    built+=("$target_dir/rules/$name")
done
# Rules no longer built or bundled (a rule moved to examples/, a renamed file) go.
for f in "$target_dir"/rules/*.wasm "$target_dir"/rules/*.yaml "$target_dir"/example-rules/*.wasm; do
    [ -e "$f" ] || continue
    case "$f" in *-py.wasm) continue ;; esac # Python rules: below
    case " ${built[*]} " in *" $f "*) ;; *) rm -f "$f" ;; esac
done
copy vigil_example_rule_ "$target_dir/example-rules" examples/rules "$target_dir/wasm32-unknown-unknown/rule"
copy vigil_test_rule_ "$target_dir/test-rules" tests/rules "$target_dir/wasm32-wasip2/rule"
# Python rules (plugin-sdk/python), when the test tools' venv has
# componentize-py (scripts/setup-test-tools.sh): the conformance twin of
# echo-all, and the crypto-miner's Python twin. Rebuilt only when a source
# is newer than the component.
py="$target_dir/tools/py/bin/python"
python_rule() { # source.py destination.wasm
    if [ ! -e "$2" ] || [ -n "$(find "$1" plugin-sdk/python/vigil_rules wit -newer "$2" -print -quit)" ]; then
        PYTHONPATH=plugin-sdk/python "$py" -m vigil_rules build "$1" -o "$2.tmp" >/dev/null
        mv -f "$2.tmp" "$2"
    fi
}
if [ -x "$target_dir/tools/py/bin/componentize-py" ]; then
    python_rule tests/python-rules/echo_all.py "$target_dir/test-rules/echo-all-py.wasm"
    python_rule plugin-sdk/python/examples/crypto_miner.py "$target_dir/example-rules/crypto-miner-py.wasm"
else
    echo "build-rules: no componentize-py (scripts/setup-test-tools.sh): Python rules not built" >&2
fi
echo "rules: $(ls "$target_dir/rules" | tr '\n' ' ')"
echo "example rules: $(ls "$target_dir/example-rules" | tr '\n' ' ')"
echo "test rules: $(ls "$target_dir/test-rules" | tr '\n' ' ')"
