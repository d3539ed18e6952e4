// Package agentsock is the agent's local unix socket, over which one-shot
// commands (wal-push from archive_command, wal-fetch's prefetch) hand their
// work to a running daemon instead of doing it alone.
//
// It owns the socket's path safety (a directory writable by no other user,
// a socket file of the agent's user, a live daemon's socket never taken
// over), its permissions (mode 0600), the peer credentials of both ends
// (SO_PEERCRED, where the platform tells them), and the wire protocol: one
// line of JSON (Request) answered by one line of JSON (Response). Listen
// and Server.Run are the daemon's end; Call is the client's, and answers
// ErrNoDaemon whenever the caller should do the work itself.
//
// What a request does is not its business: the daemon gives the Server a
// Handler. It must never pass a request from a uid it was not told to trust
// to that handler, and a client must never believe an answer from a socket,
// directory or process of a user it does not trust (ErrUntrustedSocket):
// a local user who binds the socket first must not be able to answer
// "archived" for WAL it never stored.
package agentsock
