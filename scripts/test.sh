#!/usr/bin/env bash
# Runs every package's tests (make test): `go test ./...`, with the slowest
# part of coordinator/e2e (LATE_E2E) in a second `go test` started at the
# same time, so that three end-to-end labs run at once instead of two
# (the e2e tests mostly wait on timeouts and PostgreSQL, not the CPU).
# Both runs' output is shown; the script fails when either fails.
set -uo pipefail
GO=${GO:-go}
read -r -a FLAGS <<<"${GOTESTFLAGS:--race -count=1 -timeout 40m}"
# Every name is unique in the repository (-skip applies to every package).
LATE_E2E='^(TestFailsafeAllCoordinatorsStopped|TestFailsafePrimaryCutFromCoordinators|TestFailsafePrimaryIsolated|TestFailsafeMemberOutsideGossip|TestRemoveVoterKeepsQuorum|TestAddCoordinatorGuards|TestWipedCoordinatorDoesNotBootstrap|TestRecoverAfterQuorumLoss|TestAddUnreachableToOneVoter|TestSynchronousQuorum|TestSynchronousNoAckedCommitLost|TestSLOFailoverConsumesBudget|TestSLOLeaderChangeKeepsBudget|TestRaftKillLeaderRestartAndSnapshots|TestBackupSchedulerLeaderKill)$'

second=$(mktemp)
trap 'rm -f "$second"' EXIT
"$GO" test "${FLAGS[@]}" -run "$LATE_E2E" ./coordinator/e2e >"$second" 2>&1 &
pid=$!
"$GO" test "${FLAGS[@]}" -skip "$LATE_E2E" ./...
rc1=$?
wait "$pid"
rc2=$?
echo "--- the second run (coordinator/e2e: $LATE_E2E) ---"
cat "$second"
if [ "$rc1" -ne 0 ] || [ "$rc2" -ne 0 ]; then
  echo "make test: FAILED (go test ./...: exit $rc1; the second coordinator/e2e run: exit $rc2)" >&2
  exit 1
fi
