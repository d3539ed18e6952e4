package agentsock

import (
	"net"
	"syscall"
)

// peerUID is the user of the process on the other end of a unix socket
// connection (SO_PEERCRED: the credentials it had when it connected or
// listened).
func peerUID(conn net.Conn) (uid uint32, known bool, err error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, false, nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, false, err
	}
	if cerr != nil {
		return 0, false, cerr
	}
	return cred.Uid, true, nil
}
