// Package filestore implements storage.ObjectStore on a local (or mounted)
// file system for file:///path repositories.
//
// Each key maps to a file below the root directory. Put writes to a hidden
// temporary file in the target directory, fsyncs it, renames it into place
// and fsyncs the directory, so a crash never exposes a partial object and a
// completed Put survives power loss. Temporary files start with
// ".pgdr-tmp-"; List skips them and keys may not use that name.
//
// Files are created 0600 and directories 0700. Run as root (euid 0), the
// store gives every file and directory it creates to the owner of the root
// directory; when the root does not exist yet, to the owner of its nearest
// existing parent (the root and any missing parent it creates included).
// So a command run with sudo, or a daemon run as root, leaves a repository
// that PostgreSQL's user, the archiver, can still read and write.
//
// Symbolic links below the root are never followed, by any operation: the
// repository is untrusted storage (docs/security.md), and a link planted in
// it must not let pgdr read, write or delete a file of the host. Every
// operation resolves keys through an os.Root opened on the root directory
// (no path can resolve outside it, however its components change
// meanwhile) and refuses, with ErrSymlink naming it, a key any component of
// which is a link, even one pointing inside the root. A listing that meets a
// link (as the listed directory or as an entry) fails with ErrSymlink: a
// caller deleting what it lists stops rather than act on a partial view;
// remove the link by hand. The root itself may be a link: the operator
// chose it.
//
// Because a file system cannot hold both a file "a" and a directory "a", the
// keys "a" and "a/b" cannot coexist here (S3 allows it); pgdr's key layout
// never needs that.
package filestore
