#!/usr/bin/env bash
# Runs every package's tests (make test): `go test ./...`, with the slowest
# part of coordinator/e2e (LATE_E2E) in a second `go test` started at the
# same time, so that three end-to-end labs run at once instead of two
# (the e2e tests mostly wait on timeouts and PostgreSQL, not the CPU).
# Both runs' output is shown; the script fails when either fails.
# First, the Kubernetes chart's offline validation (deploy/kubernetes/check,
# a module of its own so that Helm and k8s.io stay out of pgdr's: helm lint
# --strict, helm template for each value set, strict k8s.io/api decoding,
# policy, rendered manifests current), without -race: it is all parsing.
set -uo pipefail
GO=${GO:-go}
read -r -a FLAGS <<<"${GOTESTFLAGS:--race -count=1 -timeout 40m}"
# Every name is unique in the repository (-skip applies to every package).
LATE_E2E='^(TestFailsafeAllCoordinatorsStopped|TestFailsafePrimaryCutFromCoordinators|TestFailsafePrimaryIsolated|TestFailsafeMemberOutsideGossip|TestRemoveVoterKeepsQuorum|TestAddCoordinatorGuards|TestWipedCoordinatorDoesNotBootstrap|TestRecoverAfterQuorumLoss|TestAddUnreachableToOneVoter|TestSynchronousQuorum|TestSynchronousNoAckedCommitLost|TestSLOFailoverConsumesBudget|TestSLOLeaderChangeKeepsBudget|TestRaftKillLeaderRestartAndSnapshots|TestBackupSchedulerLeaderKill|TestIncidentsFailoverEscalation|TestRollingUpgrade|TestRunbookLeaderKillAndRollback|TestSlotsDroppedByLeader)$'

echo "--- deploy/kubernetes/check (the Helm chart's offline validation) ---"
(cd deploy/kubernetes/check && "$GO" vet ./... && "$GO" test -count=1 ./...)
rc0=$?

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
if [ "$rc0" -ne 0 ] || [ "$rc1" -ne 0 ] || [ "$rc2" -ne 0 ]; then
  echo "make test: FAILED (deploy/kubernetes/check: exit $rc0; go test ./...: exit $rc1; the second coordinator/e2e run: exit $rc2)" >&2
  exit 1
fi
