package pgctl

import (
	"os/user"
	"slices"
	"strconv"
	"testing"
)

// TestCredentialGroups: the identity PostgreSQL runs as keeps the user's
// supplementary groups (Go's setgroups would otherwise drop them all, and
// a file readable through a group would no longer be).
func TestCredentialGroups(t *testing.T) {
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres account: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	want, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Credential(uint32(uid), uint32(gid))
	if err != nil {
		t.Fatal(err)
	}
	if c.Uid != uint32(uid) || c.Gid != uint32(gid) || c.NoSetGroups {
		t.Fatalf("credential %+v for %s (%s:%s)", c, u.Username, u.Uid, u.Gid)
	}
	for _, s := range append(want, u.Gid) {
		g, _ := strconv.ParseUint(s, 10, 32)
		if !slices.Contains(c.Groups, uint32(g)) {
			t.Fatalf("credential for %s has groups %v, want every one of %v and %s", u.Username, c.Groups, want, u.Gid)
		}
	}

	// A uid with no account keeps its group.
	c, err = Credential(4000000001, 4000000002)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Groups, []uint32{4000000002}) {
		t.Fatalf("credential for a uid with no account: groups %v, want [4000000002]", c.Groups)
	}
}
