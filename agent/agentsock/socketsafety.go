package agentsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"syscall"
)

// ErrUntrustedSocket means the agent socket, its directory or the process
// answering on it does not belong to a user the caller trusts: a local
// user who binds the socket first must not be able to answer "archived"
// for WAL it never stored (docs/security.md). Call wraps it in
// ErrNoDaemon, so the caller does the work itself.
var ErrUntrustedSocket = errors.New("the agent socket is not trusted")

// TrustedUIDs are the users a one-shot command accepts as the daemon: its
// own effective user and the owner of the data directory (the user
// PostgreSQL and its agent run as), so that root running a command by hand
// may still hand work to the daemon.
func TrustedUIDs(pgdata string) []uint32 {
	uids := []uint32{uint32(os.Geteuid())}
	if fi, err := os.Stat(pgdata); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !slices.Contains(uids, st.Uid) {
			uids = append(uids, st.Uid)
		}
	}
	return uids
}

// checkSocketDir refuses a socket directory anyone else could put a
// socket in: it must belong to one of owners or to root, and be writable
// by no one else — not by others, and by its group only when that is this
// process's own group (/var/run/postgresql is postgres:postgres 2775).
// A world-writable directory such as /tmp is refused even with its sticky
// bit: another user can take the socket's name before the daemon does.
func checkSocketDir(dir string, owners []uint32) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // no ownership information on this platform
	}
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrUntrustedSocket, dir)
	case st.Uid != 0 && !slices.Contains(owners, st.Uid):
		return fmt.Errorf("%w: its directory %s belongs to uid %d, not to the agent's user (uid %v)", ErrUntrustedSocket, dir, st.Uid, owners)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("%w: its directory %s is writable by every user (mode %v): give agent.socket a directory of the agent's user", ErrUntrustedSocket, dir, fi.Mode().Perm())
	case fi.Mode().Perm()&0o020 != 0 && st.Gid != uint32(os.Getegid()):
		return fmt.Errorf("%w: its directory %s is writable by group %d (mode %v)", ErrUntrustedSocket, dir, st.Gid, fi.Mode().Perm())
	}
	return nil
}

// checkSocketFile refuses a socket file that is not a socket or does not
// belong to one of owners. fs.ErrNotExist is returned as it is.
func checkSocketFile(path string, owners []uint32) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: %s is not a socket (%v)", ErrUntrustedSocket, path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && !slices.Contains(owners, st.Uid) {
		return fmt.Errorf("%w: %s belongs to uid %d, not to the agent's user (uid %v)", ErrUntrustedSocket, path, st.Uid, owners)
	}
	return nil
}

// checkPeer refuses a connection whose other end runs as none of uids
// (SO_PEERCRED). Where the platform cannot tell, the path checks alone
// stand.
func checkPeer(conn net.Conn, uids []uint32) error {
	uid, known, err := peerUID(conn)
	if err != nil {
		return fmt.Errorf("%w: reading the peer's credentials: %v", ErrUntrustedSocket, err)
	}
	if known && !slices.Contains(uids, uid) {
		return fmt.Errorf("%w: the process on the other end runs as uid %d, not as the agent's user (uid %v)", ErrUntrustedSocket, uid, uids)
	}
	return nil
}
