package pgctl

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// Credential is the identity a PostgreSQL program started by root runs
// as: user uid, group gid and uid's supplementary groups. A Credential
// without Groups makes Go call setgroups with none, and the server then
// cannot read what it may only through a group (an identity file shared
// with a pgdr group, read by restore_command's wal-fetch). A uid with no
// account gets gid alone.
func Credential(uid, gid uint32) (*syscall.Credential, error) {
	c := &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{gid}}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		var unknown user.UnknownUserIdError
		if errors.As(err, &unknown) {
			return c, nil
		}
		return nil, fmt.Errorf("looking up the groups of user %d: %w", uid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("looking up the groups of user %s (%d): %w", u.Username, uid, err)
	}
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s (%d): group id %q: %w", u.Username, uid, s, err)
		}
		if !slices.Contains(c.Groups, uint32(g)) {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c, nil
}
