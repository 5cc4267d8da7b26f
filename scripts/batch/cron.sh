#!/usr/bin/env bash
# Run scripts/batch/cli.py from cron: one run at a time, everything logged, exit code kept.
#
#   scripts/batch/cron.sh [batch_score arguments ...]
#
# Relative input and output paths are read from the directory the wrapper is started in (cron:
# the crontab owner's home), as for any command; the wrapper does not change directory.
# The lock (flock on BATCH_LOCK) is held for the whole run, by this shell and by the Python
# process it starts: a second run started while one is going exits at once with code 6 and a line
# in the log, and never waits. The lock disappears with the processes (no stale lock files).
#
# Environment (all optional):
#   BATCH_LOCK      lock file            default: <repo>/.run/batch_score.lock
#   BATCH_LOG_DIR   one log file per day default: <repo>/logs/batch  (batch-YYYY-MM-DD.log)
#   BATCH_LOG_DAYS  days of logs kept    default: 30
#   PYTHON          interpreter          default: <repo>/.venv/bin/python
# Exit codes: those of batch_score (README.md, "Exit codes"), 6 when the lock is held.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCK=${BATCH_LOCK:-$REPO/.run/batch_score.lock}
LOG_DIR=${BATCH_LOG_DIR:-$REPO/logs/batch}
LOG_DAYS=${BATCH_LOG_DAYS:-30}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
EXIT_LOCK_HELD=6

mkdir -p "$(dirname "$LOCK")" "$LOG_DIR"
LOG="$LOG_DIR/batch-$(date +%F).log"
say() { printf '%s cron_batch[%d]: %s\n' "$(date '+%F %T')" "$$" "$*" >>"$LOG"; }

exec 9>>"$LOCK"
if ! flock --nonblock 9; then
    say "another run holds $LOCK; not starting (exit $EXIT_LOCK_HELD)"
    exit "$EXIT_LOCK_HELD"
fi

find "$LOG_DIR" -name 'batch-*.log' -mtime +"$LOG_DAYS" -delete 2>/dev/null
say "start in $PWD: batch_score $*"
# The repository goes on the module path instead of becoming the working directory, so relative
# paths in the arguments keep meaning what they mean where the wrapper was started (-P: modules are
# not looked up in that directory, where a folder named scripts/ could shadow ours).
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -P -m scripts.batch --progress log "$@" >>"$LOG" 2>&1
rc=$?
say "end: exit $rc"
exit "$rc"
