package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// A coordinator whose data directory holds no Raft state is either new
// (never a member, or removed) or a member that lost its data. A member
// that lost its data must not start: raft would run it with an empty log,
// and while the others' configuration still lists it, it grants its vote
// to any candidate, having forgotten the entries it acknowledged; a leader
// that lacks committed entries (epochs, primaries) could be elected (Raft
// amnesia, review D5). A new coordinator is in no configuration until
// `pgdrctl coordinator add`, which it must be running for. So before
// starting Raft on an empty data directory it asks its peers (the
// bootstrap list's API addresses) whether their latest configuration lists
// it, and decides with decideEmptyStart.

// peerAnswer is what one peer of the bootstrap list answered.
type peerAnswer struct {
	Name, API string
	Err       error  // no answer: unreachable, not running Raft yet, refused
	LastIndex uint64 // its last Raft log index (0: it holds no state)
	// ListedAs: the asking coordinator's suffrage in the peer's latest
	// configuration ("voter", "nonvoter", "staging"), "none", or "" from a
	// coordinator that predates the question.
	ListedAs string
}

// listed: a peer holding state lists this coordinator with a vote (or
// about to get one: "staging"). A non-voter is not: it never counted
// towards a commit, so it acknowledged nothing that could be lost, and it
// is promoted only once caught up (addNonvoterCaughtUp); it is what a
// coordinator that `coordinator add` is adding looks like.
func (a peerAnswer) listed() bool {
	return a.Err == nil && a.LastIndex > 0 && a.ListedAs != "" && a.ListedAs != "none" && a.ListedAs != "nonvoter"
}

// adding: a peer holding state lists this coordinator as a non-voter.
func (a peerAnswer) adding() bool {
	return a.Err == nil && a.LastIndex > 0 && a.ListedAs == "nonvoter"
}

func (a peerAnswer) String() string {
	switch {
	case a.Err != nil:
		return fmt.Sprintf("%s: no answer (%v)", a.Name, a.Err)
	case a.LastIndex == 0:
		return a.Name + ": holds no raft state"
	case a.ListedAs == "":
		return fmt.Sprintf("%s: raft log index %d, does not say whether it lists this coordinator (an older version)", a.Name, a.LastIndex)
	case a.ListedAs == "none":
		return fmt.Sprintf("%s: raft log index %d, not in its configuration", a.Name, a.LastIndex)
	}
	return fmt.Sprintf("%s: raft log index %d, a %s of its configuration", a.Name, a.LastIndex, a.ListedAs)
}

type startAction int

const (
	// startWait: start Raft with an empty log and wait until a leader
	// adds this node (or, at a cluster's first start, reaches it).
	startWait startAction = iota
	// startBootstrap: form a new cluster from the bootstrap list.
	startBootstrap
)

func (a startAction) String() string {
	if a == startBootstrap {
		return "bootstrap"
	}
	return "wait"
}

// startPlan is decideEmptyStart's answer: what to do and what to log.
type startPlan struct {
	action     startAction
	warn, info string
}

func joinAnswers(as []peerAnswer) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return strings.Join(out, "; ")
}

// selfInfo names the starting coordinator and the addresses to add it
// back with.
type selfInfo struct {
	Name, RaftAddress, APIAddress, Region string
}

// decideEmptyStart decides what coordinator self, whose data directory
// holds no Raft state, does from its peers' answers (none when its
// configuration lists no peer), whether it was started with --bootstrap
// (and has a bootstrap list) and with --force-empty.
//
//   - A peer holding state lists it as a voter: it lost its data; refused
//     (unless forced) with the remove-then-add fix. With --bootstrap it
//     joins instead, warning: at a cluster's first start a peer that
//     bootstrapped first lists every initial voter, and a coordinator that
//     never ran has acknowledged nothing (--bootstrap asserts exactly that).
//   - Listed as a non-voter: it is being added (started, then `coordinator
//     add` at once); it waits, as a non-voter never votes and is promoted
//     only once caught up.
//   - A peer holding state does not list it: a new or removed coordinator;
//     it waits to be added (--bootstrap: the cluster exists, no new one).
//     One peer holding state that says so is trusted although one that
//     did not answer might list it (if that one missed the change):
//     refusing whenever one peer is down would stop every new coordinator.
//   - No peer holding state answers: --bootstrap forms the cluster (item
//     10: at a first start the others may not be up yet). Otherwise it
//     cannot tell a new coordinator from a member that lost its data while
//     its peers are unreachable, and refuses unless forced; a service
//     manager's restart tries again. A peer without state (itself empty)
//     or too old to say proves nothing.
//   - No peer to ask (an empty bootstrap list, the usual configuration of
//     a coordinator joined by `coordinator add`): it starts, warning that
//     nothing was checked.
func decideEmptyStart(me selfInfo, answers []peerAnswer, bootstrap, forceEmpty bool) (startPlan, error) {
	self := me.Name
	var holders, listing, informed []peerAnswer
	for _, a := range answers {
		if a.Err != nil || a.LastIndex == 0 {
			continue
		}
		holders = append(holders, a)
		switch {
		case a.listed():
			listing = append(listing, a)
		case a.ListedAs == "none", a.adding():
			informed = append(informed, a)
		}
	}
	fix := fmt.Sprintf("remove it from the configuration, then start it and add it back: `pgdrctl coordinator remove --name %s`, "+
		"start it (no --bootstrap), then `pgdrctl coordinator add --name %s --raft-address %s --api-address %s --region %s` (docs/coordinator-recovery.md)",
		self, self, me.RaftAddress, me.APIAddress, me.Region)
	if bootstrap {
		switch {
		case len(holders) == 0:
			return startPlan{action: startBootstrap}, nil
		case len(listing) > 0:
			return startPlan{action: startWait, warn: fmt.Sprintf(
				"not bootstrapping: a bootstrap peer already holds raft state and lists %s (%s), so the cluster exists; joining it with an empty log, as on the first start of a cluster that another member bootstrapped first. "+
					"If %s ran before and lost its data directory, stop it now (it could vote without entries it acknowledged) and %s",
				self, joinAnswers(listing), self, fix)}, nil
		}
		return startPlan{action: startWait, info: fmt.Sprintf(
			"not bootstrapping: a bootstrap peer already holds raft state, so the cluster exists; waiting for its leader to add this node (%s)", joinAnswers(holders))}, nil
	}
	if len(listing) > 0 {
		a := listing[0]
		msg := fmt.Sprintf("%s has no raft state in its data_dir but is still a %s of the raft configuration of its peers (%s): it lost its data, "+
			"and started with an empty log it would grant its vote to a candidate that lacks entries it acknowledged before, so a leader missing committed state could be elected. "+
			"Do not start it as it is: %s",
			self, a.ListedAs, joinAnswers(listing), fix)
		if forceEmpty {
			return startPlan{action: startWait, warn: msg + ". Starting anyway (--force-empty)"}, nil
		}
		return startPlan{}, fmt.Errorf("%s. Nothing was changed on disk. (--force-empty starts it anyway: only when you are certain the listing peers are stale)", msg)
	}
	if len(answers) == 0 {
		return startPlan{action: startWait, warn: fmt.Sprintf(
			"no raft state in data_dir and no peers to ask (the configuration has no bootstrap list): %s cannot check whether the others' raft configuration still lists it; starting and waiting to be added. "+
				"A member whose data was lost must be removed before it starts again; list the coordinators in `bootstrap` so that this is checked", self)}, nil
	}
	if len(informed) > 0 {
		if slices.ContainsFunc(informed, peerAnswer.adding) {
			return startPlan{action: startWait, info: fmt.Sprintf(
				"no raft state in data_dir and listed as a non-voter: being added; waiting for the leader's log (a non-voter does not vote, and is promoted once caught up) (%s)",
				joinAnswers(informed))}, nil
		}
		return startPlan{action: startWait, info: fmt.Sprintf(
			"no raft state in data_dir and not started with --bootstrap: waiting to be added (peers holding raft state do not list %s: %s). "+
				"The first start of a new cluster passes --bootstrap", self, joinAnswers(informed))}, nil
	}
	msg := fmt.Sprintf("%s has no raft state in its data_dir, and no peer holding raft state answered (%s), so it cannot tell whether it is a new coordinator or a member that lost its data "+
		"(which must not start with an empty log while the others' configuration lists it)", self, joinAnswers(answers))
	if forceEmpty {
		return startPlan{action: startWait, warn: msg + "; starting anyway and waiting to be added (--force-empty)"}, nil
	}
	return startPlan{}, cannotTellError{fmt.Sprintf("%s. Nothing was changed on disk. Start it again once a peer answers; if %s is a new coordinator (never a member, or removed), "+
		"or the first start of a new cluster is meant, pass --force-empty or --bootstrap respectively; if it lost its data, %s", msg, self, fix)}
}

// answerOf reads peer's RaftIndex answer. Another coordinator answering
// at the peer's address (a misconfiguration) is noted; its "not listed"
// proves nothing and counts as no answer, though a listing as a voter
// still refuses.
func answerOf(peer, api string, r *pgdrv1.RaftIndexResponse) peerAnswer {
	a := peerAnswer{Name: peer, API: api, LastIndex: r.GetLastLogIndex(), ListedAs: r.GetListedAs()}
	if r.GetName() != "" && r.GetName() != peer {
		a.Name = fmt.Sprintf("%s (answering as %s)", peer, r.GetName())
		if a.ListedAs == "" || a.ListedAs == "none" {
			a.Err = fmt.Errorf("the coordinator at %s answers as %s, not %s", api, r.GetName(), peer)
		}
	}
	return a
}

// cannotTellError: no peer holding Raft state answered; asking again later
// may settle it.
type cannotTellError struct{ msg string }

func (e cannotTellError) Error() string { return e.msg }

// emptyStartAskFor is how long a coordinator with an empty data directory
// keeps asking its peers while none holding Raft state answers (they may be
// starting too) before it refuses.
const emptyStartAskFor = 20 * time.Second

// askPeers asks every peer of the bootstrap list (but this coordinator)
// how far its Raft log reaches and whether its configuration lists this
// coordinator, all at once.
func (s *Server) askPeers(ctx context.Context) []peerAnswer {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []peerAnswer
	for _, p := range s.cfg.Bootstrap {
		if p.Name == s.cfg.Name || p.APIAddress == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := peerAnswer{Name: p.Name, API: p.APIAddress}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			r, err := s.peerRaftIndexOf(cctx, p.APIAddress, s.cfg.Name)
			if err != nil {
				a.Err = err
			} else {
				a = answerOf(p.Name, p.APIAddress, r)
			}
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b peerAnswer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// planEmptyStart asks the peers and decides (decideEmptyStart); while no
// peer holding Raft state answers, it asks again for emptyStartAskFor.
func (s *Server) planEmptyStart(ctx context.Context) (startPlan, error) {
	me := selfInfo{Name: s.cfg.Name, RaftAddress: s.cfg.Raft.Advertise, APIAddress: s.cfg.API.Advertise, Region: s.cfg.Region}
	deadline := time.Now().Add(emptyStartAskFor)
	for {
		answers := s.askPeers(ctx)
		plan, err := decideEmptyStart(me, answers, s.opts.Bootstrap && len(s.cfg.Bootstrap) > 0, s.opts.ForceEmpty)
		var ct cannotTellError
		if !errors.As(err, &ct) || time.Now().After(deadline) {
			return plan, err
		}
		s.log.Info("no raft state in data_dir and no peer holding raft state answered yet; asking again", "answers", joinAnswers(answers))
		select {
		case <-ctx.Done():
			return plan, err
		case <-time.After(2 * time.Second):
		}
	}
}

// noRaftFiles reports whether dataDir holds neither a Raft log directory
// nor a snapshot: a wiped or new data directory, checked without creating
// anything.
func noRaftFiles(dataDir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dataDir, "raft-wal")); err == nil {
		return false, nil
	} else if !os.IsNotExist(err) {
		return false, fmt.Errorf("raft log in %s: %w", dataDir, err)
	}
	ents, err := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	switch {
	case os.IsNotExist(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("raft snapshots in %s: %w", dataDir, err)
	}
	return len(ents) == 0, nil
}

// listedAs is name's suffrage in c ("voter", "nonvoter", "staging") or
// "none".
func listedAs(c raft.Configuration, name string) string {
	for _, sv := range c.Servers {
		if string(sv.ID) == name {
			return strings.ToLower(sv.Suffrage.String())
		}
	}
	return "none"
}
