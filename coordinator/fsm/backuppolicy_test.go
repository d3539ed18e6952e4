package fsm

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const tBackupPolicy = pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY

// twoTiers is a valid backup policy as the server proposes it.
func twoTiers() *pgdrv1.BackupPolicy {
	p := policy.Policy{PITRWindow: 3 * policy.Day, Tiers: []policy.Tier{
		{Name: "weekly", Type: policy.TypeFull, Schedule: "0 2 * * 0", KeepCount: 4},
		{Name: "nightly", Type: policy.TypeIncr, Schedule: "0 2 * * 1-6", Timezone: "Europe/Berlin", KeepAge: 8 * policy.Day, Repos: []string{"local"}},
	}}
	p.Normalize()
	return policy.ToProto(p)
}

// TestSetBackupPolicy: a policy is stored with who set it and when, and
// recorded in the history; repeating it changes nothing; a policy out of
// bounds or for an unknown cluster is rejected and changes nothing; no
// policy resets to the defaults.
func TestSetBackupPolicy(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	if c, _ := h.f.Cluster("main"); c.GetBackupPolicy() != nil {
		t.Fatalf("a new cluster has a backup policy: %v", c.GetBackupPolicy())
	}
	h.mustApply(tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: twoTiers()})
	setAt := h.index
	c, _ := h.f.Cluster("main")
	got := c.GetBackupPolicy()
	if got.GetUpdatedBy() != "admin:test" || !got.GetUpdatedAt().AsTime().Equal(t0.Add(time.Duration(setAt)*time.Second)) {
		t.Fatalf("stamps: by %q at %v", got.GetUpdatedBy(), got.GetUpdatedAt().AsTime())
	}
	bare := proto.Clone(got).(*pgdrv1.BackupPolicy)
	bare.UpdatedAt, bare.UpdatedBy = nil, ""
	if !proto.Equal(bare, twoTiers()) {
		t.Fatalf("stored %v, want %v", bare, twoTiers())
	}
	ev := h.f.History("main", 0, 1)[0]
	if ev.GetKind() != KindBackupPolicySet || ev.GetActor() != "admin:test" ||
		ev.GetMessage() != "backup policy set: 2 tiers (weekly full, nightly incr), pitr_window 3d" {
		t.Fatalf("history event %v", ev)
	}

	// The same policy again (a retry): accepted, no event, stamps kept.
	seq := h.f.State().GetNextSeq()
	h.mustApply(tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: twoTiers()})
	if c, _ := h.f.Cluster("main"); h.f.State().GetNextSeq() != seq || !proto.Equal(c.GetBackupPolicy(), got) {
		t.Fatal("an unchanged policy was recorded again")
	}

	// Rejections change nothing.
	before := h.f.State()
	for name, bp := range map[string]*pgdrv1.SetBackupPolicy{
		"unknown cluster": {Cluster: "nope", Policy: twoTiers()},
		"too many tiers": {Cluster: "main", Policy: func() *pgdrv1.BackupPolicy {
			p := twoTiers()
			for i := 0; i < policy.MaxTiers; i++ {
				t := proto.Clone(p.Tiers[0]).(*pgdrv1.BackupTier)
				t.Name = "extra" + strings.Repeat("x", i)
				p.Tiers = append(p.Tiers, t)
			}
			return p
		}()},
		"huge schedule":      {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].Schedule = strings.Repeat("*", 10000) })},
		"negative keep_age":  {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[1].KeepAgeSeconds = -1 })},
		"bad type":           {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[1].Type = "snapshot" })},
		"duplicate name":     {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[1].Name = "weekly" })},
		"no tiers":           {Cluster: "main", Policy: &pgdrv1.BackupPolicy{PitrWindowSeconds: 60}},
		"zero timeout":       {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].TimeoutSeconds = 0 })},
		"too many repos":     {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].Repos = strings.Fields("a b c d e f g h i") })},
		"invalid repo name":  {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].Repos = []string{"../etc"} })},
		"negative pitr":      {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.PitrWindowSeconds = -5 })},
		"unknown run_on":     {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].RunOn = "anywhere" })},
		"retention disabled": {Cluster: "main", Policy: edit(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].KeepCount = 0 })},
	} {
		res := h.apply(tBackupPolicy, bp)
		if res.GetOk() || res.GetError() == "" {
			t.Errorf("%s: accepted", name)
		}
	}
	after := h.f.State()
	after.LastIndex = before.LastIndex
	if !proto.Equal(before, after) {
		t.Fatal("a rejected backup policy changed the state")
	}

	// No policy: back to the defaults, recorded.
	h.mustApply(tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main"})
	if c, _ := h.f.Cluster("main"); c.GetBackupPolicy() != nil {
		t.Fatal("reset kept the policy")
	}
	if ev := h.f.History("main", 0, 1)[0]; ev.GetKind() != KindBackupPolicySet || ev.GetDetails()["reset"] != "true" {
		t.Fatalf("reset event %v", ev)
	}
	// Resetting a cluster that has none is not recorded.
	seq = h.f.State().GetNextSeq()
	h.mustApply(tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main"})
	if h.f.State().GetNextSeq() != seq {
		t.Fatal("a reset of the defaults was recorded")
	}
}

// TestBackupPolicySurvivesSnapshot: snapshot and restore keep the policy
// and its stamps.
func TestBackupPolicySurvivesSnapshot(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: twoTiers()})
	want, _ := h.f.Cluster("main")
	if want.GetBackupPolicy() == nil {
		t.Fatal("no policy to snapshot")
	}
	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	got, _ := fresh.Cluster("main")
	if !proto.Equal(got.GetBackupPolicy(), want.GetBackupPolicy()) || got.GetBackupPolicy().GetUpdatedBy() != "admin:test" {
		t.Fatalf("restored backup policy %v, want %v", got.GetBackupPolicy(), want.GetBackupPolicy())
	}
	if p, isDefault := policy.Effective(got); isDefault || len(p.Tiers) != 2 || p.Tiers[1].Timezone != "Europe/Berlin" {
		t.Fatalf("effective policy after restore: default=%v %+v", isDefault, p)
	}
}

func edit(fn func(p *pgdrv1.BackupPolicy)) *pgdrv1.BackupPolicy {
	p := twoTiers()
	fn(p)
	return p
}
