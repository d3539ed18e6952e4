// Package packaging holds no code: it tests `make dist` (scripts/dist.sh).
// The test builds the release archive and the .deb for the host's
// architecture, installs the .deb with dpkg -i (as root, when no pgdr
// package or user is there already; otherwise it extracts it with
// dpkg-deb -x into a scratch root and says so), runs the installed
// binaries, checks the pgdr user, /etc/pgdr's permissions and that the
// units are installed but not enabled, then purges the package and checks
// that it is gone. It is skipped with -short.
package packaging
