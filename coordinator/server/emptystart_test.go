package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestDecideEmptyStart: review D5. A coordinator whose data directory
// holds no Raft state asks its peers whether their configuration still
// lists it. Listed, it lost its data and would vote with an empty log
// (Raft amnesia) as a voter: it refuses, naming itself and the
// remove-then-add fix, unless --force-empty; as a non-voter it is being
// added and waits. Not listed by a peer that holds state (a new
// coordinator, or one removed), it starts and waits to be added. With no
// such answer it cannot tell, and refuses unless --force-empty; with
// nobody to ask (no bootstrap list) it starts, warning. --bootstrap forms a
// cluster only when no peer holds state.
func TestDecideEmptyStart(t *testing.T) {
	down := errors.New("connection refused")
	voter := peerAnswer{Name: "c2", LastIndex: 40, ListedAs: "voter"}
	nonvoter := peerAnswer{Name: "c2", LastIndex: 40, ListedAs: "nonvoter"}
	notListed := peerAnswer{Name: "c2", LastIndex: 40, ListedAs: "none"}
	unreachable := peerAnswer{Name: "c3", Err: down}
	empty := peerAnswer{Name: "c3", ListedAs: "none"}            // holds no raft state: proves nothing
	older := peerAnswer{Name: "c3", LastIndex: 40, ListedAs: ""} // predates listed_as: cannot tell
	for _, tc := range []struct {
		name       string
		answers    []peerAnswer
		boot       bool
		force      bool
		want       startAction
		wantErr    []string // substrings of the refusal ("" = none)
		wantLogged string   // substring of the warning or info logged
	}{
		{name: "listed as voter: refused", answers: []peerAnswer{voter, unreachable},
			wantErr: []string{"c1", "still a voter", "c2", "pgdrctl coordinator remove --name c1", "pgdrctl coordinator add --name c1 --raft-address 10.0.1.10:7001 --api-address 10.0.1.10:7101 --region us-east-1", "--force-empty", "Nothing was changed"}},
		{name: "listed as staging: refused", answers: []peerAnswer{{Name: "c2", LastIndex: 40, ListedAs: "staging"}},
			wantErr: []string{"still a staging", "pgdrctl coordinator remove --name c1"}},
		// A non-voter never voted: `coordinator add` adds the node it was
		// started for as one, maybe before this check ran.
		{name: "listed as non-voter (being added): waits", answers: []peerAnswer{nonvoter, unreachable},
			want: startWait, wantLogged: "being added"},
		{name: "listed by one, not by another: refused", answers: []peerAnswer{notListed, {Name: "c3", LastIndex: 41, ListedAs: "voter"}},
			wantErr: []string{"c3"}},
		{name: "listed, forced: starts, warning", answers: []peerAnswer{voter}, force: true,
			want: startWait, wantLogged: "--force-empty"},
		{name: "not listed by a peer with state: waits to be added", answers: []peerAnswer{notListed, unreachable},
			want: startWait, wantLogged: "waiting to be added"},
		{name: "nobody answers: refused", answers: []peerAnswer{unreachable, {Name: "c2", Err: down}},
			wantErr: []string{"c1", "cannot tell", "c2", "c3", "connection refused", "--force-empty"}},
		{name: "only peers without state answer: refused", answers: []peerAnswer{empty, unreachable},
			wantErr: []string{"cannot tell", "holds no raft state"}},
		{name: "an older peer that cannot tell: refused", answers: []peerAnswer{older},
			wantErr: []string{"cannot tell"}},
		{name: "nobody answers, forced: starts, warning", answers: []peerAnswer{unreachable}, force: true,
			want: startWait, wantLogged: "--force-empty"},
		{name: "no peers to ask: starts, warning", answers: nil,
			want: startWait, wantLogged: "no peers to ask"},
		{name: "bootstrap, nobody holds state: bootstraps", answers: []peerAnswer{unreachable, empty}, boot: true,
			want: startBootstrap},
		{name: "bootstrap, a peer holds state and lists it: joins, warning", answers: []peerAnswer{voter}, boot: true,
			want: startWait, wantLogged: "a bootstrap peer already holds raft state"},
		{name: "bootstrap, a peer holds state without it: waits", answers: []peerAnswer{notListed}, boot: true,
			want: startWait, wantLogged: "a bootstrap peer already holds raft state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := decideEmptyStart(selfInfo{Name: "c1", RaftAddress: "10.0.1.10:7001", APIAddress: "10.0.1.10:7101", Region: "us-east-1"}, tc.answers, tc.boot, tc.force)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("started (%+v); want a refusal", plan)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("refusal %q does not say %q", err, s)
					}
				}
				// Only "cannot tell" is asked again; a listed node is refused at once.
				var ct cannotTellError
				if got, want := errors.As(err, &ct), strings.Contains(err.Error(), "cannot tell"); got != want {
					t.Errorf("asked again (cannotTellError): %v, want %v", got, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if plan.action != tc.want {
				t.Errorf("action %v, want %v", plan.action, tc.want)
			}
			if got := plan.warn + plan.info; !strings.Contains(got, tc.wantLogged) {
				t.Errorf("logged %q, want it to say %q", got, tc.wantLogged)
			}
		})
	}
}

// TestRaftIndexListsServer: RaftIndex with a name says whether this
// node's latest configuration lists that server, and as what.
func TestRaftIndexListsServer(t *testing.T) {
	s := testServer(t, Options{})
	api := &coordAPI{s: s}
	if _, err := api.RaftIndex(context.Background(), &pgdrv1.RaftIndexRequest{Name: "c1"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("RaftIndex before raft runs: %v, want Unavailable", err)
	}
	startInmemRaft(t, s)
	if err := s.raft.AddNonvoter("c9", "127.0.0.1:9", 0, 0).Error(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"c1": "voter", "c9": "nonvoter", "c2": "none", "": ""} {
		r, err := api.RaftIndex(context.Background(), &pgdrv1.RaftIndexRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetListedAs() != want || r.GetLastLogIndex() == 0 {
			t.Errorf("RaftIndex(%q): listed_as %q, last index %d; want %q and the log's index", name, r.GetListedAs(), r.GetLastLogIndex(), want)
		}
	}
}

// TestAnswerOf: a peer answering under another name (a misconfigured
// address) does not count as "not listed", but its voter listing does.
func TestAnswerOf(t *testing.T) {
	for _, c := range []struct {
		name, listed string
		noAnswer     bool
	}{
		{"c2", "none", false},
		{"", "none", false},
		{"c7", "none", true},
		{"c7", "", true},
		{"c7", "voter", false},
	} {
		a := answerOf("c2", "127.0.0.1:1", &pgdrv1.RaftIndexResponse{Name: c.name, ListedAs: c.listed, LastLogIndex: 9})
		if (a.Err != nil) != c.noAnswer {
			t.Errorf("answering as %q, listed %q: err %v, want no answer %v", c.name, c.listed, a.Err, c.noAnswer)
		}
		if c.listed == "voter" && !a.listed() {
			t.Errorf("answering as %q: a voter listing must still refuse", c.name)
		}
	}
}
