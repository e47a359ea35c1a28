#!/usr/bin/env bash
# Builds every bundled rule (rules/*) and test fixture rule (tests/rules/*)
# to a WebAssembly component:
#   target/rules/<id>.wasm       the bundled rules (what `vigil run` loads), with
#                                the interpreter of rule files (declarative.wasm)
#   target/rules/*.yaml          the bundled rule files (rules/declarative/rules)
#   target/example-rules/<id>.wasm  Rust rules kept as examples (examples/rules),
#                                not bundled: the rule files now detect what they did
#   target/test-rules/<id>.wasm  fixtures for the end-to-end tests
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --profile rule --target wasm32-wasip2 -p 'vigil-rule-*' -p 'vigil-example-rule-*' -p 'vigil-test-rule-*' "$@"

out="$target_dir/wasm32-wasip2/rule"
mkdir -p "$target_dir/rules" "$target_dir/example-rules" "$target_dir/test-rules"
copy() { # crate-file-prefix destination-dir crates-dir
    for f in "$out"/"$1"*.wasm; do
        [ -e "$f" ] || continue
        name=$(basename "$f" .wasm)
        name=${name#"$1"}
        # Only crates that are still there (cargo's output keeps old ones).
        [ -d "$3/${name//_/-}" ] || continue
        # Copy to a temp name then rename: a running daemon watching the
        # directory never sees a half-written file.
        cp "$f" "$2/.$name.wasm.tmp" && mv -f "$2/.$name.wasm.tmp" "$2/${name//_/-}.wasm"
        built+=("$2/${name//_/-}.wasm")
    done
}
built=()
copy vigil_rule_ "$target_dir/rules" rules
# The bundled rule files (Falco dialect), run by declarative.wasm.
for f in rules/declarative/rules/*.yaml; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    cp "$f" "$target_dir/rules/.$name.tmp" && mv -f "$target_dir/rules/.$name.tmp" "$target_dir/rules/$name"
    built+=("$target_dir/rules/$name")
done
# Rules no longer built or bundled (a rule moved to examples/, a renamed file) go.
for f in "$target_dir"/rules/*.wasm "$target_dir"/rules/*.yaml "$target_dir"/example-rules/*.wasm; do
    [ -e "$f" ] || continue
    case " ${built[*]} " in *" $f "*) ;; *) rm -f "$f" ;; esac
done
copy vigil_example_rule_ "$target_dir/example-rules" examples/rules
copy vigil_test_rule_ "$target_dir/test-rules" tests/rules
echo "rules: $(ls "$target_dir/rules" | tr '\n' ' ')"
echo "example rules: $(ls "$target_dir/example-rules" | tr '\n' ' ')"
echo "test rules: $(ls "$target_dir/test-rules" | tr '\n' ' ')"
