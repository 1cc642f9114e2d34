test "$1" = "$INPUT_WORD" || exit 1
test "$GITHUB_WORKSPACE" = /github/workspace || exit 1
test -f README.parity || exit 1
echo "said=$1" >> "$GITHUB_OUTPUT"
echo "docker action ran with $1"
