"""``python -m vigil_rules build RULE.py [-o RULE.wasm]``: a rule module as a
Vigil rule component, with componentize-py against Vigil's WIT."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SDK = Path(__file__).resolve().parent


def default_wit() -> Path:
    """$VIGIL/wit (a checkout of Vigil), else the checkout this SDK sits in."""
    if os.environ.get("VIGIL"):
        return Path(os.environ["VIGIL"]) / "wit"
    return SDK.parent.parent.parent / "wit"


def build(rule: Path, output: Path, wit: Path) -> None:
    if not rule.is_file():
        sys.exit(f"vigil_rules build: no such rule file: {rule}")
    if not (wit / "rules.wit").is_file():
        sys.exit(f"vigil_rules build: Vigil's WIT not found in {wit} (give --wit DIR)")
    componentize = shutil.which("componentize-py") or str(Path(sys.executable).parent / "componentize-py")
    if not Path(componentize).exists():
        sys.exit("vigil_rules build: componentize-py is not installed (pip install componentize-py)")
    with tempfile.TemporaryDirectory() as tmp:
        # The SDK alone beside the app (not all of site-packages).
        shutil.copytree(SDK, Path(tmp, "vigil_rules"), ignore=shutil.ignore_patterns("__pycache__"))
        # The app module componentize-py loads: the rule's module, then the export.
        Path(tmp, "vigil_rule_app.py").write_text(
            f"import {rule.stem}  # noqa: F401  (declares the rule)\n"
            "from vigil_rules._component import Detector  # noqa: F401\n"
        )
        cmd = [
            componentize, "-d", str(wit), "-w", "rule", "componentize", "vigil_rule_app",
            "-p", tmp, "-p", str(rule.parent.resolve()), "-o", str(output),
        ]
        done = subprocess.run(cmd)
    if done.returncode != 0:
        sys.exit(f"vigil_rules build: componentize-py failed ({done.returncode})")
    print(f"{output}: {output.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vigil_rules", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a rule module into a component")
    b.add_argument("rule", type=Path, help="the rule's module (a .py file declaring one @rule)")
    b.add_argument("-o", "--output", type=Path, help="the component (default: RULE with .wasm)")
    b.add_argument("--wit", type=Path, default=None, help="Vigil's WIT directory (default: $VIGIL/wit)")
    args = parser.parse_args()
    build(args.rule, args.output or args.rule.with_suffix(".wasm"), args.wit or default_wit())


if __name__ == "__main__":
    main()
